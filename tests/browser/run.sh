#!/usr/bin/env bash
# The browser end-to-end tests: installs what they need if missing (Debian's chromium, node and
# npm; the npm packages from package-lock.json), builds the relay's release binary (the same build
# as loadtest/, so scripts/test compiles it once), and runs every
# *.test.mjs here with node's test runner against real headless Chromium.
set -euo pipefail
cd "$(dirname "$0")"

command -v node >/dev/null && command -v npm >/dev/null || ../../scripts/apt-install nodejs npm
[ -x /usr/bin/chromium ] || ../../scripts/apt-install chromium
# turn.test.mjs: a real TURN server.
[ -x /usr/bin/turnserver ] || ../../scripts/apt-install coturn

npm ci --no-audit --no-fund --loglevel=error
(cd ../.. && cargo build --release -p callrelay-server -p callrelay-loadgen --locked)
mkdir -p ../../artifacts
node --test --test-concurrency=1 ./*.test.mjs
