#!/usr/bin/env bash
# Capacity per relay core, measured to saturation (issue #11): for each shape (meeting, webinar,
# voice) the load is stepped up until the knee (loss >= 0.1 %, a missing stream, a failed or
# closed session, or relay p99 >= 5 ms), with the relay pinned to one core and one media worker
# and callrelay-loadgen pinned to the other (taskset). Janus VideoRoom, pinned the same way with
# one event loop, is stepped beside it. Prints the tables; writes capacity.json and one SVG chart
# per shape. The steps and rules are in loadtest/capacity.py.
#
#   loadtest/capacity.sh                         # every shape, callrelay and Janus (<= 10 min)
#   CAPACITY_TARGETS=callrelay loadtest/capacity.sh
#   CAPACITY_SHAPES=voice CAPACITY_MAX_STEPS=2 loadtest/capacity.sh   # the CI smoke
#   python3 loadtest/capacity.py --median OUT RUN1 RUN2 RUN3   # medians over repeated runs
#
# Environment:
#   CAPACITY_SHAPES       comma-separated shapes (default meeting,webinar,voice; also
#                         voice-3-talking: 30 audio-only, 3 talking, the others silent at the
#                         DTX rate)
#   CAPACITY_TARGETS      callrelay, janus or both (default callrelay,janus)
#   CAPACITY_STEP_SECONDS traffic per step (default 8)
#   CAPACITY_MAX_STEPS    steps per shape at most (default: until the knee)
#   CAPACITY_BUDGET       seconds after which no new step starts (default 540)
#   CAPACITY_OUT          output directory (default loadtest/capacity-out)
#   CAPACITY_LOADGEN_ARGS more callrelay-loadgen arguments for every step
#   LOADTEST_NO_BUILD=1   reuse target/release binaries
# Janus needs root (a private network namespace: Janus gathers no ICE candidates on a loopback
# interface) and is installed from Debian's packages if missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."

shapes="${CAPACITY_SHAPES:-meeting,webinar,voice}"
targets="${CAPACITY_TARGETS:-callrelay,janus}"
out="${CAPACITY_OUT:-loadtest/capacity-out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -z "${CAPACITY_IN_NETNS:-}" ]; then
  command -v taskset >/dev/null 2>&1 || scripts/apt-install util-linux
  if [[ ",$targets," == *",janus,"* ]]; then
    missing=""
    command -v janus >/dev/null 2>&1 || missing="$missing janus"
    command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
    # shellcheck disable=SC2086
    [ -z "$missing" ] || scripts/apt-install $missing
    if [ "$(id -u)" != 0 ]; then
      echo "capacity.sh: Janus needs root (a private network namespace); or CAPACITY_TARGETS=callrelay" >&2
      exit 1
    fi
  fi
  if [ -z "${LOADTEST_NO_BUILD:-}" ]; then
    cargo build --release --locked -p callrelay-server -p callrelay-loadgen >&2
  fi
  if [[ ",$targets," == *",janus,"* ]]; then
    CAPACITY_IN_NETNS=1 CAPACITY_OUT="$out" exec unshare -n "$here/capacity.sh" "$@"
  fi
else
  # Inside the private network namespace: 127.0.0.1 on a veth, as in compare.sh.
  ip link set lo up
  ip link add crcv0 type veth peer name crcv1
  ip addr add 127.0.0.1/32 dev crcv0
  ip link set crcv1 up
  ip link set crcv0 up
fi

exec python3 "$here/capacity.py" --out "$out" --shapes "$shapes" --targets "$targets" \
  --step-seconds "${CAPACITY_STEP_SECONDS:-8}" --max-steps "${CAPACITY_MAX_STEPS:-20}" \
  --budget-seconds "${CAPACITY_BUDGET:-540}"
