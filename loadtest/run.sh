#!/usr/bin/env bash
# One bounded load test on this machine: builds release binaries, starts the relay in dev mode
# on 127.0.0.1 with a temporary data dir, runs callrelay-loadgen against it, stops the relay.
#
#   loadtest/run.sh                                  # 2 rooms × 3 publishers, 10 s
#   loadtest/run.sh --rooms 4 --publishers 4 --duration 20s --json /tmp/report.json
#
# Arguments, if any, replace the default scenario and go to callrelay-loadgen as they are
# (--url and --dev are added here). Exit code: the loadgen's (2 = a threshold failed).
set -euo pipefail
cd "$(dirname "$0")/.."

port="${LOADTEST_HTTP_PORT:-7790}"
base="http://127.0.0.1:${port}"
if [ "$#" -eq 0 ]; then
  set -- --rooms 2 --publishers 3 --duration 10s
fi

# LOADTEST_NO_BUILD=1 reuses target/release binaries (e.g. to step the load without rebuilding).
if [ -z "${LOADTEST_NO_BUILD:-}" ]; then
  cargo build --release --locked -p callrelay-server -p callrelay-loadgen >&2
fi

data="$(mktemp -d)"
relay_pid=""
cleanup() {
  if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
    kill "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

# Join and create limits are per minute and far below a load test's pace; every participant
# comes from 127.0.0.1 with its own WebSocket, past the default 256 connections per address;
# free UDP ports.
CALLRELAY_MEDIA_PORTS=0 \
CALLRELAY_MEDIA_BIND_IP=127.0.0.1 \
CALLRELAY_LIMITS_JOIN_PER_IP_PER_MINUTE=100000 \
CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP=0 \
CALLRELAY_LIMITS_JOIN_PER_USER_PER_MINUTE=100000 \
CALLRELAY_LIMITS_CREATE_PER_USER_PER_MINUTE=100000 \
CALLRELAY_LOG_LEVEL="${CALLRELAY_LOG_LEVEL:-warn}" \
  target/release/callrelay serve --dev --http-addr "127.0.0.1:${port}" \
  --public-url "$base" --data-dir "$data" 2>"$data/relay.log" &
relay_pid=$!

for _ in $(seq 1 100); do
  if curl -sf "$base/healthz" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$relay_pid" 2>/dev/null; then
    echo "run.sh: the relay exited at start:" >&2
    cat "$data/relay.log" >&2
    exit 1
  fi
  sleep 0.1
done

set +e
target/release/callrelay-loadgen --url "$base" --dev --relay-pid "$relay_pid" "$@"
rc=$?
set -e
exit "$rc"
