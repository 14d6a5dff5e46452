#!/usr/bin/env bash
# Installs the tools the tests and benchmarks need, when missing:
# - Debian packages: promtool and prometheus (alert rule tests, the real-Prometheus test), nginx (the
#   fast benchmark receiver), kcat, jq (the README's tested shell snippets), chromium (the web console's browser tests drive it through
#   Playwright; no browser download), Node.js and npm (the Node.js examples and the AsyncAPI parser),
#   podman + runc + debootstrap (the container image and compose tests). Go is not installed here
#   (Debian's is older than the Go examples need): without it, their tests and the Helm chart's are
#   skipped with the reason;
# - Helm v4 (the chart tests), built with Go (when there is one) into build/bin (deploy/install-helm.sh);
# - Toxiproxy v2.12.0 (the network-fault tests), built with Go into build/toxiproxy (deploy/install-toxiproxy.sh);
# - the Debian bookworm base image tarball the image test builds on (deploy/container/base-image.sh).
# Big downloads and builds are cached under build/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v kcat >/dev/null || missing+=(kcat)
command -v jq >/dev/null || missing+=(jq)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || missing+=(runc)
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
command -v java >/dev/null || { echo "Java 17+ not found: install openjdk-17-jre-headless" >&2; exit 1; }
command -v mvn >/dev/null || { echo "Maven not found: install maven" >&2; exit 1; }
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
if ((${#missing[@]})); then
    echo "installing ${missing[*]} (Debian packages)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if command -v go >/dev/null; then
    bash deploy/install-helm.sh build/bin/helm
else
    echo "no go: Helm v4 is not built (the Helm chart tests say so and skip)" >&2
fi
bash deploy/install-toxiproxy.sh  # the network-fault tests' TCP fault proxy (Go; /usr/local/go/bin/go if not on PATH)
if [[ $(id -u) -eq 0 ]]; then
    bash deploy/container/base-image.sh build/container/bookworm-python.tar
else
    echo "not root: skipping the debootstrap base image (the container image tests say so and skip)" >&2
fi
