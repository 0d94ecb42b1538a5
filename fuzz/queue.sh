#!/usr/bin/env bash
# Runs the given fuzz targets one after another (fuzz/run.sh, 10 minutes each): one core.
# usage: fuzz/queue.sh TARGET...
cd "$(dirname "$0")"
for t in "$@"; do
  case $t in
    config_toml|resp_*) ./run.sh "$t" 10 -max_len=16384 > /dev/null 2>&1 ;;
    *) ./run.sh "$t" 10 > /dev/null 2>&1 ;;
  esac
done
