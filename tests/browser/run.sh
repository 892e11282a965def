#!/usr/bin/env bash
# The browser end-to-end tests: installs what they need if missing (Debian's chromium and
# firefox-esr, node and npm; the npm packages from package-lock.json), builds the relay's release
# binary (the same build as loadtest/, so scripts/test compiles it once), and runs every
# *.test.mjs here with node's test runner against real headless Chromium (playwright-core) and,
# in firefox.test.mjs, headless Firefox ESR (puppeteer-core over WebDriver BiDi).
set -euo pipefail
cd "$(dirname "$0")"

command -v node >/dev/null && command -v npm >/dev/null || ../../scripts/apt-install nodejs npm
[ -x /usr/bin/chromium ] || ../../scripts/apt-install chromium
# firefox.test.mjs: Debian's Firefox ESR (no browser is ever downloaded by npm or puppeteer).
[ -x /usr/bin/firefox-esr ] || ../../scripts/apt-install firefox-esr
# turn.test.mjs: a real TURN server.
[ -x /usr/bin/turnserver ] || ../../scripts/apt-install coturn

PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
(cd ../.. && cargo build --release -p callrelay-server -p callrelay-loadgen --locked)
mkdir -p ../../artifacts
node --test --test-concurrency=1 ./*.test.mjs
