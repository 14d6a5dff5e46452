#!/usr/bin/env bash
# Installs the Debian tools the tests and benchmarks need, when missing: promtool and prometheus
# (alert rule tests, the real-Prometheus test), nginx (the fast benchmark receiver), kcat,
# chromium (the web console's browser tests drive it through Playwright; no browser download), Node.js
# and npm (the Node.js examples and the AsyncAPI parser). Go is not installed here (Debian's is older
# than the Go examples need): without it, their tests are skipped with the reason.
set -euo pipefail
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v kcat >/dev/null || missing+=(kcat)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v java >/dev/null || { echo "Java 17+ not found: install openjdk-17-jre-headless" >&2; exit 1; }
command -v mvn >/dev/null || { echo "Maven not found: install maven" >&2; exit 1; }
((${#missing[@]})) || exit 0
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
echo "installing ${missing[*]} (Debian packages)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
