#!/usr/bin/env bash
# A soak: the relay under steady load with a hostile participant in every room, for a long time,
# on this machine. It fails if the relay's memory grows past a bound, if any participant is
# removed (or fails to join) unexpectedly, or if a link it used is not there and consistent at
# the end.
#
#   loadtest/soak.sh                                   # 10 min, 6 rooms x 5 publishers, --hostile
#   SOAK_DURATION=60s SOAK_ROOMS=2 SOAK_PUBLISHERS=3 loadtest/soak.sh   # a short one (the CI smoke)
#
# The default load is 6 rooms x 5 publishers (audio and 3 video layers). 80 % of the meeting knee
# that loadtest/capacity.sh measured is SOAK_PIN=1 SOAK_ROOMS=12 SOAK_LOADGEN_ARGS="--subscribe-layer h"
# (README, "Soak"). Environment:
#   SOAK_DURATION      how long traffic flows (default 10m)
#   SOAK_ROOMS         rooms (default 6); SOAK_PUBLISHERS per room (default 5)
#   SOAK_RSS_SLACK_MB  allowed RSS growth after warm-up, MiB (default 32), plus SOAK_RSS_SLACK_PCT
#                      percent of the warm-up RSS (default 20)
#   SOAK_WARMUP        seconds before the RSS baseline is taken (default 60, or a fifth of a
#                      shorter run)
#   SOAK_OUT           directory for the report, the RSS samples and the relay's log (default: a
#                      temporary one, printed)
#   SOAK_PIN=1         the relay on the first allowed core with one media worker and the loadgen
#                      on the second (taskset), as loadtest/capacity.sh measures a knee; without
#                      it both share every core and the relay runs its default workers
#   SOAK_LOADGEN_ARGS  more callrelay-loadgen arguments (e.g. "--subscribe-layer h")
#   LOADTEST_NO_BUILD=1  reuse target/release binaries
# Exit code: 0 passed, 1 an error or a failed check (printed).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${SOAK_DURATION:-10m}"
rooms="${SOAK_ROOMS:-6}"
publishers="${SOAK_PUBLISHERS:-5}"
slack_mb="${SOAK_RSS_SLACK_MB:-32}"
slack_pct="${SOAK_RSS_SLACK_PCT:-20}"
out="${SOAK_OUT:-$(mktemp -d)}"
mkdir -p "$out"

secs=$(python3 -c "
import re,sys
t='$duration'; m={'s':1,'m':60,'h':3600}
v=re.fullmatch(r'(\d+)([smh])',t)
sys.exit('SOAK_DURATION must look like 90s, 10m or 1h') if not v else print(int(v[1])*m[v[2]])")
warmup="${SOAK_WARMUP:-$(( secs / 5 < 60 ? secs / 5 : 60 ))}"

if [ -z "${LOADTEST_NO_BUILD:-}" ] || [ ! -x target/release/callrelay ] ||
  [ ! -x target/release/callrelay-loadgen ]; then
  cargo build --release --locked -p callrelay-server -p callrelay-loadgen >&2
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:${port}"
data="$out/data"
mkdir -p "$data"
relay_pid=""
sampler_pid=""
cleanup() {
  if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null || true; fi
  if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
    kill "$relay_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$relay_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

relay_pin=()
loadgen_pin=()
if [ -n "${SOAK_PIN:-}" ]; then
  read -r core0 core1 < <(python3 -c 'import os; c=sorted(os.sched_getaffinity(0)); print(c[0], c[1 % len(c)])')
  relay_pin=(taskset -c "$core0")
  loadgen_pin=(taskset -c "$core1")
  export CALLRELAY_MEDIA_WORKERS=1
fi
read -r -a extra_args <<<"${SOAK_LOADGEN_ARGS:-}"

CALLRELAY_MEDIA_PORTS=0 \
CALLRELAY_MEDIA_BIND_IP=127.0.0.1 \
CALLRELAY_LIMITS_JOIN_PER_IP_PER_MINUTE=100000 \
CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP=0 \
CALLRELAY_LIMITS_JOIN_PER_USER_PER_MINUTE=100000 \
CALLRELAY_LIMITS_CREATE_PER_USER_PER_MINUTE=100000 \
CALLRELAY_DRAIN_DEADLINE=5s \
CALLRELAY_LOG_LEVEL="${CALLRELAY_LOG_LEVEL:-warn}" \
  "${relay_pin[@]}" target/release/callrelay serve --dev --http-addr "127.0.0.1:${port}" \
  --public-url "$base" --data-dir "$data" 2>"$out/relay.log" &
relay_pid=$!
for _ in $(seq 1 100); do
  curl -sf "$base/healthz" >/dev/null 2>&1 && break
  if ! kill -0 "$relay_pid" 2>/dev/null; then
    echo "soak.sh: the relay exited at start:" >&2
    cat "$out/relay.log" >&2
    exit 1
  fi
  sleep 0.1
done

# The links the soak uses, created here so they can be checked at the end.
token=$(curl -sf -XPOST "$base/v1/dev/token" -H 'content-type: application/json' \
  -d '{"user":"soak-owner"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
links=()
for _ in $(seq 1 "$rooms"); do
  links+=("$(curl -sf -XPOST "$base/v1/links" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"kind":"video","title":"soak"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
done
link_args=()
for l in "${links[@]}"; do link_args+=(--link "$l"); done

# RSS every 10 s (KiB, from /proc).
(
  start=$(date +%s)
  while kill -0 "$relay_pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$relay_pid/status" 2>/dev/null || echo 0)
    echo "$(( $(date +%s) - start )) $rss"
    sleep 10
  done
) >"$out/rss.txt" &
sampler_pid=$!

echo "soak.sh: $rooms rooms x $publishers publishers + 1 hostile each, $duration, relay pid $relay_pid, output in $out" >&2
set +e
"${loadgen_pin[@]}" target/release/callrelay-loadgen --url "$base" --dev --relay-pid "$relay_pid" \
  "${link_args[@]}" --publishers "$publishers" --duration "$duration" --hostile "${extra_args[@]}" \
  --max-loss 0.001 --json "$out/report.json" -q | tee "$out/report.txt"
rc=${PIPESTATUS[0]}
set -e
# One last sample after the run.
echo "end $(awk '/^VmRSS:/ {print $2}' "/proc/$relay_pid/status")" >>"$out/rss.txt"
kill "$sampler_pid" 2>/dev/null || true
sampler_pid=""

failed=0
if [ "$rc" -ne 0 ]; then
  echo "soak.sh: FAILED: the loadgen's thresholds (loss, failed joins, sessions the relay closed) exit $rc" >&2
  failed=1
fi

# Memory: after warm-up, RSS may not grow past the bound.
verdict=$(python3 - "$out/rss.txt" "$warmup" "$slack_mb" "$slack_pct" <<'EOF'
import sys
path, warmup, slack_mb, slack_pct = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rows = []
for line in open(path):
    t, kb = line.split()
    if kb.isdigit() and int(kb) > 0:
        rows.append((t, int(kb)))
start = rows[0][1]
base = next((kb for t, kb in rows if t != "end" and int(t) >= warmup), rows[-1][1])
peak = max(kb for _, kb in rows)
end = rows[-1][1]
bound = base * (1 + slack_pct / 100) + slack_mb * 1024
ok = peak <= bound
print(f"rss MiB start {start/1024:.1f}  after warm-up {base/1024:.1f}  peak {peak/1024:.1f}  end {end/1024:.1f}  bound {bound/1024:.1f}  {'ok' if ok else 'GREW PAST THE BOUND'}")
sys.exit(0 if ok else 1)
EOF
) && mem_ok=1 || mem_ok=0
echo "soak.sh: $verdict"
if [ "$mem_ok" -ne 1 ]; then failed=1; fi

# Hostile participants were removed for flooding, and only for that.
python3 - "$out/report.json" <<'EOF' || failed=1
import json, sys
r = json.load(open(sys.argv[1]))
h = r.get("hostile") or {}
p = r["participants"]
closed = p.get("closed_by_relay", {})
print(f"soak.sh: participants joined {p['joined']} failed {p['failed']}  closed by the relay {closed or 'none'}  "
      f"hostile joins {h.get('joins')} removed {h.get('removed')} refused {h.get('messages_refused')}")
bad = []
if p["failed"]:
    bad.append(f"{p['failed']} participants failed")
if closed:
    bad.append(f"sessions closed by the relay: {closed}")
if not h.get("joins"):
    bad.append("no hostile participant ever joined")
if set(h.get("removed", {})) - {"rate_limited"}:
    bad.append(f"hostile participants ended otherwise than rate_limited: {h['removed']}")
if bad:
    print("soak.sh: FAILED: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF

# Every link is still there, active, renewed by the soak's joins.
for l in "${links[@]}"; do
  body=$(curl -s -w '\n%{http_code}' "$base/v1/links/$l")
  code=$(echo "$body" | tail -n1)
  if [ "$code" != 200 ] || ! echo "$body" | head -n -1 | python3 -c '
import json, sys, datetime
p = json.load(sys.stdin)
exp = datetime.datetime.fromisoformat(p["expires_at"].replace("Z", "+00:00"))
left = exp - datetime.datetime.now(datetime.timezone.utc)
sys.exit(0 if p["kind"] == "video" and p["title"] == "soak" and left > datetime.timedelta(days=89) else 1)'; then
    echo "soak.sh: FAILED: link ${l:0:4}… is not there and consistent (HTTP $code)" >&2
    failed=1
  fi
done
echo "soak.sh: ${#links[@]} links checked"

if [ "$failed" -ne 0 ]; then
  echo "soak.sh: FAILED (details in $out)" >&2
  exit 1
fi
echo "soak.sh: PASSED (details in $out)"
