#!/usr/bin/env bash
# Static checks of the deploy/ artifacts, run by scripts/test before `cargo test`:
#   - promtool check rules / check config (installs the Debian `prometheus` package for promtool
#     when promtool is missing, without letting the package start a Prometheus server), and
#     promtool test rules: the alert rules' unit tests (prometheus/alerts.test.yml);
#   - systemd-analyze verify of the unit (skipped with a message where systemd-analyze is absent);
#   - kubectl kustomize of deploy/kubernetes, where kubectl is installed (offline render).
# The Rust test crates/server/tests/deploy.rs checks the contents (metric names, env names, ports).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null 2>&1 || scripts/apt-install prometheus
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
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
