#!/usr/bin/env bash
# rolecall end to end on loopback: 1 master + 1 replica + 3 sentinels, two sample nodes (one
# pins the master's address, one follows Sentinel), one rolecall per node. Shows the verdicts,
# runs a real SENTINEL FAILOVER and shows the pinned node leave rotation while the
# Sentinel-following node stays in. Needs redis-server, redis-sentinel, redis-cli and curl
# (Debian: apt-get install redis-server redis-sentinel redis-tools curl); it says so and stops
# if one is missing, unless --install is given: then it installs the missing ones with apt-get
# (as root, or with sudo) first. The test suite never passes --install.
#
#   bash tests/demo.sh [--install]          # from the repository root
#
# Ports: free loopback ports below the kernel's ephemeral range, picked at start and printed.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
for b in redis-server redis-sentinel redis-cli curl; do need "$b" || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ] && [ "${1:-}" = "--install" ]; then
  echo "== installing redis-server redis-sentinel redis-tools curl (missing: ${missing[*]})"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-sentinel redis-tools curl >/dev/null
  missing=()
  for b in redis-server redis-sentinel redis-cli curl; do need "$b" || missing+=("$b"); done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}; install them first (Debian: apt-get install redis-server redis-sentinel redis-tools curl), or run bash tests/demo.sh --install" >&2
  exit 1
fi
[ -n "${ROLECALL_BIN_DIR:-}" ] || need cargo || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }

if [ -n "${ROLECALL_BIN_DIR:-}" ]; then
  BIN=$ROLECALL_BIN_DIR            # prebuilt binaries (the test suite runs this script)
else
  echo "== building rolecall"
  cargo build --quiet --bins
  BIN=target/debug
fi

WORK=$(mktemp -d /tmp/rolecall-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A loopback port nobody listens on and this script has not chosen yet, into PORT. Chosen below
# the ephemeral range, so no outgoing connection takes it before its server binds it.
CHOSEN=" "
free_port() {
  local lo hi base span
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
  if [ "$lo" -gt 11000 ]; then base=10000; span=$((lo - 10000)); else base=$((hi + 1)); span=$((65535 - hi)); fi
  for _ in $(seq 1 200); do
    PORT=$((base + (RANDOM * 32768 + RANDOM) % span))
    case "$CHOSEN" in *" $PORT "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then CHOSEN="$CHOSEN$PORT "; return 0; fi
  done
  echo "no free loopback port found in $base..$((base + span))" >&2; exit 1
}
free_port; M=$PORT; free_port; R=$PORT
S=(); for _ in 1 2 3; do free_port; S+=("$PORT"); done
A=(); for _ in 1 2 3 4; do free_port; A+=("$PORT"); done
for p in $M $R; do
  mkdir -p "$WORK/$p"
  args=(--port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/$p" --logfile "$WORK/$p/log")
  [ "$p" = "$R" ] && args+=(--replicaof 127.0.0.1 $M)
  redis-server "${args[@]}" & PIDS+=($!)
done
for p in "${S[@]}"; do
  cat >"$WORK/sentinel-$p.conf" <<EOF
port $p
bind 127.0.0.1
dir $WORK
logfile $WORK/sentinel-$p.log
sentinel monitor mymaster 127.0.0.1 $M 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 5000
EOF
  redis-sentinel "$WORK/sentinel-$p.conf" & PIDS+=($!)
done

wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; exit 1
}
for p in $M $R "${S[@]}"; do wait_for "redis on port $p" 20 redis-cli -p "$p" ping; done
wait_for "replica in sync" 20 sh -c "redis-cli -p $R info replication | grep -q 'master_link_status:up'"
for p in "${S[@]}"; do
  wait_for "sentinel $p to see the replica and its peers" 30 sh -c \
    "redis-cli -p $p sentinel replicas mymaster | grep -q $R && [ \$(redis-cli -p $p sentinel sentinels mymaster | grep -c '^name$') -ge 2 ]"
done
echo "== topology up: master 127.0.0.1:$M, replica 127.0.0.1:$R, sentinels ${S[*]}"

SENTS=""
for p in "${S[@]}"; do SENTS="$SENTS --sentinel 127.0.0.1:$p"; done
$BIN/rolecall-demo-node pin --addr 127.0.0.1:$M --name pinned >"$WORK/pinned.out" 2>&1 & PINNED=$!; PIDS+=($PINNED)
# shellcheck disable=SC2086
$BIN/rolecall-demo-node follow $SENTS --master-name mymaster --name follower >"$WORK/follower.out" 2>&1 & FOLLOWER=$!; PIDS+=($FOLLOWER)

start_rolecall() { # name pid agent-port http-port
  cat >"$WORK/$1.toml" <<EOF
[node]
name = "$1"
pid = $2

[[redis]]
name = "main"
master_name = "mymaster"
sentinels = ["127.0.0.1:${S[0]}", "127.0.0.1:${S[1]}", "127.0.0.1:${S[2]}"]

[check]
interval = "500ms"
timeout = "200ms"

[agent]
listen = "127.0.0.1:$3"

[http]
listen = "127.0.0.1:$4"
EOF
  $BIN/rolecall config check --config "$WORK/$1.toml"
  # What systemd's StateDirectory= would give each instance: its own place for what it keeps.
  STATE_DIRECTORY="$WORK/$1.state" ROLECALL_LOG=info $BIN/rolecall run --config "$WORK/$1.toml" 2>"$WORK/$1.log" & PIDS+=($!)
}
start_rolecall pinned $PINNED "${A[0]}" "${A[1]}"
start_rolecall follower $FOLLOWER "${A[2]}" "${A[3]}"

agent() { # port -> the agent's reply line, or nothing after 2 s
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "\n" >&3 && IFS= read -r line <&3 && printf "%s\n" "$line"' _ "$1" || true
}
verdict() { # http port
  curl -s --max-time 2 "http://127.0.0.1:$1/status" 2>/dev/null | sed -n 's/^  "verdict": "\([a-z_]*\)",*/\1/p'
}
readyz() { # http port -> its status code
  curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz" || true
}
show() {
  printf '%-8s pinned: %-17s agent: %-36.36s | follower: %-17s agent: %-.36s\n' "$1" \
    "$(verdict "${A[1]}")" "$(agent "${A[0]}")" "$(verdict "${A[3]}")" "$(agent "${A[2]}")"
}
echo "== rolecall: pinned node agent ${A[0]}, http ${A[1]}; follower agent ${A[2]}, http ${A[3]}"
wait_for "both nodes ok" 20 sh -c "curl -sf --max-time 2 http://127.0.0.1:${A[1]}/readyz && curl -sf --max-time 2 http://127.0.0.1:${A[3]}/readyz"
show "before"

echo "== SENTINEL FAILOVER mymaster"
redis-cli -p "${S[0]}" sentinel failover mymaster >/dev/null
START=$(date +%s%N)
# Polls every half second, up to 20 s, until both verdicts are the expected ones.
for _ in $(seq 1 40); do
  show "+$(( ($(date +%s%N) - START) / 1000000 ))ms"
  if [ "$(verdict "${A[1]}")" = "stuck_on_replica" ] && [ "$(verdict "${A[3]}")" = "ok" ]; then break; fi
  sleep 0.5
done
show "after"
echo "== new master: $(redis-cli -p "${S[0]}" sentinel get-master-addr-by-name mymaster | paste -sd: -)"
echo "== what rolecall logged for the pinned node:"
grep -E "verdict changed" "$WORK/pinned.log" | sed 's/^/   /' || true
echo "== readiness: pinned $(readyz "${A[1]}"), follower $(readyz "${A[3]}")"
if [ "$(verdict "${A[1]}")" != "stuck_on_replica" ] || [ "$(verdict "${A[3]}")" != "ok" ]; then
  echo "== unexpected verdicts; rolecall logs: $WORK/*.log" >&2
  tail -n 20 "$WORK"/pinned.log "$WORK"/pinned.out >&2 || true
  exit 1
fi
echo "== demo complete: the pinned node is out of rotation, the Sentinel-following node is in"
