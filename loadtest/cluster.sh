#!/usr/bin/env bash
# One bounded load test on a 3-node cluster on this machine: a fresh database on the PostgreSQL
# server of CALLRELAY_TEST_DATABASE_URL, three release `callrelay serve` processes on 127.0.0.1
# sharing it (node-a, node-b, node-c: their own HTTP port and media port, one secret), then
# callrelay-loadgen with one --url per node (participant i joins through node i mod 3 and follows
# signal_url to the call's home), then every node is stopped (SIGTERM) and the database dropped.
#
#   eval "$(scripts/pg start)"          # a throwaway PostgreSQL: CALLRELAY_TEST_DATABASE_URL
#   loadtest/cluster.sh                 # 2 rooms × 3 publishers, 10 s, --max-loss 0
#   loadtest/cluster.sh --rooms 4 --publishers 4 --duration 20s --json /tmp/cluster.json
#   LOADTEST_KILL_NODE=b LOADTEST_KILL_AFTER=4 loadtest/cluster.sh --rooms 3 --duration 10s
#   LOADTEST_TRUNK=1 loadtest/cluster.sh   # calls across nodes: each room spans the three
#
# Arguments, if any, replace the default scenario and go to callrelay-loadgen as they are (the
# --url, --token and --relay-pid flags are added here). Environment:
#   CALLRELAY_TEST_DATABASE_URL  admin URL, postgres://user@127.0.0.1:port/postgres (required)
#   LOADTEST_NO_BUILD=1          reuse target/release binaries (built when missing anyway)
#   LOADTEST_CLUSTER_LEASE       node lease (default 3s); LOADTEST_CLUSTER_HEARTBEAT (500ms)
#   LOADTEST_KILL_NODE=a|b|c     kill -9 that node LOADTEST_KILL_AFTER seconds (default 4) after
#                                the loadgen starts: its participants must join again elsewhere
#                                (the report's `rejoins`; packets lost meanwhile count as loss)
#   LOADTEST_TRUNK=1             run the trunk between the nodes (certificates from `callrelay
#                                cluster init`), each node in its own region (region-a, …): a
#                                participant joining through node i is served there, as a leg
#                                of its room's call when the room's home is another node, so
#                                every room spans the three nodes (#16)
#   LOADTEST_TIMEOUT             seconds the loadgen may run at most (default 900)
#   LOADTEST_KEEP_LOGS=1         keep the nodes' logs (their directory is printed)
# Exit code: the loadgen's (2 = a threshold failed), 1 if the cluster could not start.
set -euo pipefail
cd "$(dirname "$0")/.."

admin="${CALLRELAY_TEST_DATABASE_URL:?set CALLRELAY_TEST_DATABASE_URL (eval \"\$(scripts/pg start)\")}"
if [ "$#" -eq 0 ]; then
  set -- --rooms 2 --publishers 3 --duration 10s --max-loss 0
fi
names=(a b c)

if [ -z "${LOADTEST_NO_BUILD:-}" ] || [ ! -x target/release/callrelay ] ||
  [ ! -x target/release/callrelay-loadgen ]; then
  cargo build --release --locked -p callrelay-server -p callrelay-loadgen >&2
fi

psql_bin="$(command -v psql || true)"
if [ -z "$psql_bin" ]; then
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/psql" ]; then psql_bin="$d/psql"; fi
  done
fi
if [ -z "$psql_bin" ]; then
  echo "cluster.sh: psql not found (scripts/pg start installs PostgreSQL)" >&2
  exit 1
fi
sql() { timeout 30 "$psql_bin" "$admin" -v ON_ERROR_STOP=1 -qAtc "$1" >/dev/null; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

work="$(mktemp -d)"
db="cr_loadtest_$(date +%s)_$$"
db_created=""
pids=()
killer=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$killer" ]; then
    kill "$killer" 2>/dev/null || true
  fi
  # SIGTERM drains a node: it exits when its last room empties, at the latest at
  # CALLRELAY_DRAIN_DEADLINE (5 s below); anything still there after 15 s is killed.
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "cluster.sh: node pid $pid did not stop within 15 s: killed" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$db_created" ]; then
    sql "DROP DATABASE IF EXISTS $db WITH (FORCE)" ||
      echo "cluster.sh: could not drop database $db" >&2
  fi
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
    for n in "${names[@]}"; do
      if [ -s "$work/node-$n.log" ]; then
        echo "--- node-$n log (last 30 lines) ---" >&2
        tail -n 30 "$work/node-$n.log" >&2
      fi
    done
  fi
  if [ -n "${LOADTEST_KEEP_LOGS:-}" ]; then
    echo "cluster.sh: node logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sql "CREATE DATABASE $db"
db_created=1
# The admin URL with the fresh database instead of its own (a query string is kept).
base_url="${admin%%\?*}"
query="${admin#"$base_url"}"
db_url="${base_url%/*}/$db$query"

secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
if [ -n "${LOADTEST_TRUNK:-}" ]; then
  target/release/callrelay cluster init --out "$work/certs" node-a node-b node-c >/dev/null
fi
# The trunk's settings for node NAME (nothing without LOADTEST_TRUNK).
trunk_env() {
  if [ -n "${LOADTEST_TRUNK:-}" ]; then
    local addr
    addr="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    echo "CALLRELAY_CLUSTER_REGION=region-$1 CALLRELAY_CLUSTER_TRUNK_ADDR=$addr CALLRELAY_CLUSTER_TRUNK_CERTS=$work/certs"
  fi
}
# Node NAME on 127.0.0.1:PORT, advertised as URL. Join and create limits are per minute and far
# below a load test's pace, and every participant comes from 127.0.0.1, past the default 256
# connections per address; media on a free UDP port of 127.0.0.1 (the node announces the port it
# bound). `exec`: the background job's pid is the node's.
start_node() {
  local n="$1" port="$2" url="$3"
  # shellcheck disable=SC2046 # word splitting of the trunk's VAR=value pairs is wanted
  exec env $(trunk_env "$n") \
    CALLRELAY_AUTH_SECRET="$secret" \
    CALLRELAY_STORE_DATABASE_URL="$db_url" \
    CALLRELAY_CLUSTER_NODE_ID="node-$n" \
    CALLRELAY_CLUSTER_LEASE="${LOADTEST_CLUSTER_LEASE:-3s}" \
    CALLRELAY_CLUSTER_HEARTBEAT="${LOADTEST_CLUSTER_HEARTBEAT:-500ms}" \
    CALLRELAY_CLUSTER_ADVERTISE_URL="$url" \
    CALLRELAY_MEDIA_WORKERS=1 \
    CALLRELAY_MEDIA_PORTS=0 \
    CALLRELAY_MEDIA_BIND_IP=127.0.0.1 \
    CALLRELAY_DRAIN_DEADLINE=5s \
    CALLRELAY_LIMITS_JOIN_PER_IP_PER_MINUTE=100000 \
    CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP=0 \
    CALLRELAY_LIMITS_JOIN_PER_USER_PER_MINUTE=100000 \
    CALLRELAY_LIMITS_CREATE_PER_USER_PER_MINUTE=100000 \
    CALLRELAY_ROOMS_MAX_SEATS_PER_USER=1000 \
    CALLRELAY_LOG_LEVEL="${CALLRELAY_LOG_LEVEL:-warn}" \
    target/release/callrelay serve --http-addr "127.0.0.1:$port" --public-url "$url" \
    --data-dir "$work/node-$n" 2>"$work/node-$n.log"
}
urls=()
for n in "${names[@]}"; do
  port="$(free_port)"
  url="http://127.0.0.1:$port"
  mkdir -p "$work/node-$n"
  start_node "$n" "$port" "$url" &
  pids+=("$!")
  urls+=("$url")
done

# Ready = the store is reachable and the node is not draining.
for i in "${!names[@]}"; do
  ready=""
  for _ in $(seq 1 300); do
    if curl -sf -m 2 "${urls[$i]}/readyz" >/dev/null 2>&1; then
      ready=1
      break
    fi
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "cluster.sh: node-${names[$i]} exited at start" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "cluster.sh: node-${names[$i]} not ready within 30 s" >&2
    exit 1
  fi
done
echo "cluster.sh: node-a ${urls[0]}  node-b ${urls[1]}  node-c ${urls[2]}  database $db" >&2

# Not dev mode: one user token signed with the cluster's secret joins every participant and
# creates the links.
token="$(env CALLRELAY_AUTH_SECRET="$secret" target/release/callrelay token --user loadgen --ttl 2h)"

if [ -n "${LOADTEST_KILL_NODE:-}" ]; then
  kill_pid=""
  for i in "${!names[@]}"; do
    if [ "${names[$i]}" = "$LOADTEST_KILL_NODE" ]; then kill_pid="${pids[$i]}"; fi
  done
  if [ -z "$kill_pid" ]; then
    echo "cluster.sh: LOADTEST_KILL_NODE is a, b or c" >&2
    exit 1
  fi
  (
    sleep "${LOADTEST_KILL_AFTER:-4}"
    echo "cluster.sh: kill -9 node-$LOADTEST_KILL_NODE" >&2
    kill -KILL "$kill_pid" 2>/dev/null || true
  ) &
  killer=$!
fi

set +e
timeout --signal=INT --kill-after=10 "${LOADTEST_TIMEOUT:-900}" \
  target/release/callrelay-loadgen \
  --url "${urls[0]}" --url "${urls[1]}" --url "${urls[2]}" --token "$token" \
  --relay-pid "${pids[0]}" --relay-pid "${pids[1]}" --relay-pid "${pids[2]}" "$@"
rc=$?
set -e
exit "$rc"
