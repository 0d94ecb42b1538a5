#!/usr/bin/env bash
# Runs every rolecall test (the README's test command). Installs what the tests need:
# Debian's redis-server, redis-sentinel and haproxy (real peers on loopback), curl, python3,
# and iproute2/util-linux/nftables for tests in network namespaces they create (run as root, as
# CI does; nftables makes the DNAT that stands for a Kubernetes ClusterIP);
# kubernetes-validate (PyPI) for the Kubernetes example.
# Checks formatting and clippy first: either failing fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for b in redis-server redis-sentinel redis-cli haproxy curl python3 ip unshare nft systemd-analyze; do
  command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing test dependencies (missing: ${missing[*]})"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    redis-server redis-sentinel redis-tools haproxy curl python3 iproute2 util-linux nftables \
    systemd >/dev/null
fi
# tests/kubernetes.rs checks deploy/kubernetes/ with kubernetes-validate from PyPI, which carries
# the Kubernetes schemas (no network at validation time), and reads the YAML with its PyYAML.
if ! python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  echo "== installing kubernetes-validate (PyPI)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
  fi
  # Into the python3 the tests run. Debian's own python3 refuses pip installs outside a
  # virtual environment (PEP 668) unless told; a user who is not root installs for itself.
  user=(); if [ "$(id -u)" -ne 0 ]; then user=(--user); fi
  python3 -m pip install --quiet kubernetes-validate 2>/dev/null \
    || python3 -m pip install --quiet "${user[@]}" --break-system-packages kubernetes-validate
  python3 -c 'import kubernetes_validate, yaml' \
    || { echo "kubernetes-validate did not install for python3" >&2; exit 1; }
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || {
    echo "cargo $tool not found: rustup component add rustfmt clippy" >&2; exit 1; }
done

# Lints are part of the suite: unformatted code or a clippy warning fails it.
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

cargo build --all-targets --quiet
cargo test --all-targets -- --test-threads="${ROLECALL_TEST_THREADS:-2}"
