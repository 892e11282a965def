#!/usr/bin/env bash
# The same load on callrelay and on Janus VideoRoom, one after the other, on 127.0.0.1; prints
# both reports and the side-by-side table with the ratios (packets delivered per relay
# CPU-second, wire-to-wire latency, loss).
#
#   loadtest/compare.sh                                   # 2 rooms × 3 publishers, 20 s
#   loadtest/compare.sh --rooms 4 --publishers 4 --duration 30s
#   COMPARE_OUT=/tmp/cmp loadtest/compare.sh ...          # keep the JSON reports and logs there
#
# Arguments, if any, replace the default scenario and go to callrelay-loadgen for both runs.
# Installs Janus (and iproute2, curl) from Debian's packages if missing (needs root, as CI has). Janus never
# gathers ICE candidates on a loopback interface, so both runs happen in a private network
# namespace (unshare -n) where a veth interface carries 127.0.0.1/32; nothing in it reaches
# out, and it disappears with the script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# A relative COMPARE_OUT means relative to where the script was called from.
if [ -n "${COMPARE_OUT:-}" ]; then
  mkdir -p "$COMPARE_OUT"
  COMPARE_OUT="$(cd "$COMPARE_OUT" && pwd)"
  export COMPARE_OUT
fi
cd "$here/.."

if [ "$#" -eq 0 ]; then
  set -- --rooms 2 --publishers 3 --duration 20s
fi

if [ -z "${COMPARE_IN_NETNS:-}" ]; then
  missing=""
  command -v janus >/dev/null 2>&1 || missing="$missing janus"
  command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
  command -v curl >/dev/null 2>&1 || missing="$missing curl"
  # shellcheck disable=SC2086
  [ -z "$missing" ] || scripts/apt-install $missing
  for tool in janus unshare ip curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "compare.sh: needs $tool" >&2; exit 1; }
  done
  if [ "$(id -u)" != 0 ]; then
    echo "compare.sh: needs root, for a private network namespace (unshare -n)" >&2
    exit 1
  fi
  if [ -z "${LOADTEST_NO_BUILD:-}" ]; then
    cargo build --release --locked -p callrelay-server -p callrelay-loadgen >&2
  fi
  COMPARE_IN_NETNS=1 exec unshare -n "$here/compare.sh" "$@"
fi

# Inside the private network namespace from here on.
out="${COMPARE_OUT:-}"
tmp="$(mktemp -d)"
if [ -z "$out" ]; then
  out="$tmp/out"
fi
mkdir -p "$out"
janus_pid=""
cleanup() {
  if [ -n "$janus_pid" ] && kill -0 "$janus_pid" 2>/dev/null; then
    kill "$janus_pid" 2>/dev/null || true
    wait "$janus_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

ip link set lo up
ip link add crjv0 type veth peer name crjv1
ip addr add 127.0.0.1/32 dev crjv0
ip link set crjv1 up
ip link set crjv0 up

# callrelay first (run.sh starts and stops it; it reads the relay's CPU from /proc).
echo "== callrelay" >&2
set +e
LOADTEST_NO_BUILD=1 loadtest/run.sh "$@" --json "$out/callrelay.json" | tee "$out/callrelay.txt"
rc_callrelay=${PIPESTATUS[0]}
set -e

# Janus: a minimal configuration, VideoRoom over the plain HTTP transport on 127.0.0.1:8088.
lib=/usr/lib/x86_64-linux-gnu/janus
[ -d "$lib" ] || lib="$(dirname "$(dpkg -L janus | grep -m1 '/plugins/libjanus_videoroom.so$')")/.."
conf="$tmp/janus"
mkdir -p "$conf"
disable_plugins=$(cd "$lib/plugins" && ls libjanus_*.so | grep -v '^libjanus_videoroom.so$' | paste -sd, -)
disable_transports=$(cd "$lib/transports" && ls libjanus_*.so | grep -v '^libjanus_http.so$' | paste -sd, -)
cat >"$conf/janus.jcfg" <<EOF
general: {
	configs_folder = "$conf"
	plugins_folder = "$lib/plugins"
	transports_folder = "$lib/transports"
	events_folder = "$lib/events"
	loggers_folder = "$lib/loggers"
	debug_level = 3
	session_timeout = 60
	# Two event loops, like callrelay's two media workers on this 2-core machine.
	event_loops = 2
}
media: {
	rtp_port_range = "20000-40000"
}
nat: {
	nice_debug = false
	full_trickle = false
	ice_enforce_list = "127.0.0.1"
}
plugins: {
	disable = "$disable_plugins"
}
transports: {
	disable = "$disable_transports"
}
events: {
	broadcast = false
}
loggers: {
}
EOF
cat >"$conf/janus.transport.http.jcfg" <<EOF
general: {
	json = "compact"
	base_path = "/janus"
	http = true
	ip = "127.0.0.1"
	port = 8088
	https = false
}
admin: {
	admin_http = false
}
EOF
# Rooms are created by the loadgen through the API (publishers limit, bitrate 0, VP8/Opus,
# fir_freq 0, notify_joining false); none are configured here.
printf 'general: {\n}\n' >"$conf/janus.plugin.videoroom.jcfg"

echo "== janus" >&2
janus -F "$conf" -C "$conf/janus.jcfg" >"$out/janus.log" 2>&1 &
janus_pid=$!
up=""
for _ in $(seq 1 100); do
  if curl -sf -o /dev/null -X POST -d '{"janus":"info","transaction":"up"}' http://127.0.0.1:8088/janus; then
    up=1
    break
  fi
  kill -0 "$janus_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "compare.sh: janus did not start:" >&2
  cat "$out/janus.log" >&2
  exit 1
fi
set +e
target/release/callrelay-loadgen --target janus --url http://127.0.0.1:8088/janus \
  --relay-pid "$janus_pid" "$@" --json "$out/janus.json" | tee "$out/janus.txt"
rc_janus=${PIPESTATUS[0]}
set -e

echo
echo "== side by side"
target/release/callrelay-loadgen --compare "$out/callrelay.json" "$out/janus.json" | tee "$out/compare.txt"
if [ "$rc_callrelay" -ne 0 ] || [ "$rc_janus" -ne 0 ]; then
  echo "compare.sh: loadgen exit codes: callrelay $rc_callrelay, janus $rc_janus" >&2
  exit 1
fi
