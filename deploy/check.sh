#!/usr/bin/env bash
# Static checks of the deploy/ artifacts, run by scripts/test before `cargo test`:
#   - promtool check rules / check config (installs the Debian `prometheus` package for promtool
#     when promtool is missing, without letting the package start a Prometheus server);
#   - systemd-analyze verify of the unit (skipped with a message where systemd-analyze is absent);
#   - kubectl kustomize of deploy/kubernetes, where kubectl is installed (offline render).
# The Rust test crates/server/tests/deploy.rs checks the contents (metric names, env names, ports).
set -euo pipefail
cd "$(dirname "$0")/.."

install_promtool() {
  echo "deploy/check: installing promtool (Debian package prometheus)" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "deploy/check: promtool is missing and installing it needs root (apt-get install prometheus)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # The package's maintainer script would start a Prometheus server (invoke-rc.d or systemctl).
  # Deny it for the duration of the install: policy-rc.d answering 101 is honoured by both
  # invoke-rc.d and deb-systemd-invoke; RUNLEVEL=1 covers sysvinit scripts that look at it.
  local policy=/usr/sbin/policy-rc.d created=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created=1
  fi
  # Only refresh the package lists when apt does not know the package yet.
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt-get update -qq >&2
  fi
  local rc=0
  RUNLEVEL=1 apt-get install -y -qq --no-install-recommends prometheus >&2 || rc=$?
  [ -n "$created" ] && rm -f "$policy"
  [ "$rc" = 0 ] || exit "$rc"
}

command -v promtool >/dev/null 2>&1 || install_promtool
promtool check rules deploy/prometheus/alerts.yml
promtool check config deploy/prometheus/prometheus.yml

if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart's binary to exist: check a copy whose ExecStart points at a binary that
  # does, everything else unchanged. A unit that fails verification fails the run.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  sed -E 's#^ExecStart=/usr/local/bin/callrelay #ExecStart=/bin/true #' \
    deploy/systemd/callrelay.service >"$tmp/callrelay.service"
  grep -q '^ExecStart=/bin/true ' "$tmp/callrelay.service" || {
    echo "deploy/check: ExecStart=/usr/local/bin/callrelay … not found in the unit" >&2
    exit 1
  }
  out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/callrelay.service" 2>&1) || {
    echo "$out" >&2
    exit 1
  }
  # verify exits 0 on some warnings (unknown keys, bad values): fail on any output about the unit.
  if grep -F 'callrelay.service' <<<"$out" >&2; then
    echo "deploy/check: systemd-analyze verify reported the problems above" >&2
    exit 1
  fi
  echo "systemd-analyze verify: deploy/systemd/callrelay.service OK"
else
  echo "deploy/check: SKIPPED systemd-analyze verify (systemd-analyze not installed)"
fi

if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize deploy/kubernetes >/dev/null
  echo "kubectl kustomize deploy/kubernetes: OK"
else
  echo "deploy/check: SKIPPED kubectl kustomize (kubectl not installed)"
fi
