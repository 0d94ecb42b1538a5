#!/usr/bin/env bash
# Builds rolecall's Debian package with cargo-deb (metadata: Cargo.toml's
# [package.metadata.deb]) and prints its path.
#
#   bash packaging/build-deb.sh [--profile PROFILE] [--no-build] [cargo-deb options, e.g. --output DIR]
#
# The profile is `release` unless told (the test suite packages the `dev` build it has already
# made, with --no-build: cargo-deb calls that profile unsupported, so tests/run.sh pins the
# cargo-deb version it installs). Steps: build the binary (unless --no-build), let it write its
# man pages and shell completions from its own command line (`rolecall generate`) into the
# build's output directory, where the metadata's `target/release/package/...` assets point,
# then package without building again.
# Needs cargo-deb (`cargo install cargo-deb --locked`) and dpkg-dev (dpkg-shlibdeps, for
# the package's library dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs a name}; shift 2 ;;
    --no-build) build=no; shift ;;
    *) break ;;
  esac
done
command -v cargo-deb >/dev/null 2>&1 \
  || { echo "cargo-deb not found: cargo install cargo-deb --locked" >&2; exit 1; }
command -v dpkg-shlibdeps >/dev/null 2>&1 \
  || { echo "dpkg-shlibdeps not found: apt-get install dpkg-dev" >&2; exit 1; }

target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
case "$profile" in
  dev | debug) out="$target_dir/debug" ;;
  *) out="$target_dir/$profile" ;;
esac

if [ "$build" = yes ]; then
  cargo build --quiet --locked --profile "$profile" --bin rolecall
fi
rm -rf "$out/package"
"$out/rolecall" generate man --out "$out/package/man"
# Debian's man pages are gzipped (Policy 12.1); cargo-deb compresses only files it did not
# find in the build's output directory.
gzip -9n "$out/package/man/"*.1
"$out/rolecall" generate completions --out "$out/package/completions"
cargo deb --no-build --locked --profile "$profile" "$@"
