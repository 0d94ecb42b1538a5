#!/usr/bin/env bash
# Runs one fuzz target, single-process, for MINUTES (default 10), on its corpus in
# fuzz/corpus/TARGET, with the limits that turn an unbounded allocation (-rss_limit_mb,
# -malloc_limit_mb) and a hang (-timeout, seconds per input) into a reported finding.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# usage: fuzz/run.sh TARGET [MINUTES] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")"
target=$1
minutes=${2:-10}
shift $(( $# < 2 ? $# : 2 ))
mkdir -p "corpus/$target" logs
cargo +nightly fuzz run "$target" "corpus/$target" -- \
  -max_total_time=$((minutes * 60)) -rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=5 \
  -print_final_stats=1 "$@" 2>&1 | tee "logs/$target.log"
