#!/usr/bin/env bash
# Builds Toxiproxy's server (a TCP fault proxy, Go) into build/toxiproxy/ for the network-fault
# tests, once: `go install` from the Go module proxy, GOPATH and caches under build/go.
set -euo pipefail
VERSION=v2.12.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/build/toxiproxy/toxiproxy-server"
[[ -x "$OUT" ]] && exit 0
GO=${GO:-$(command -v go || true)}
[[ -n "$GO" ]] || GO=/usr/local/go/bin/go
[[ -x "$GO" ]] || { echo "Go not found: install Go 1.22+ (needed once, to build Toxiproxy $VERSION)" >&2; exit 1; }
export GOPATH="$ROOT/build/go" GOBIN="$ROOT/build/go/bin" GOCACHE="$ROOT/build/go/cache" GOFLAGS=-modcacherw
echo "building Toxiproxy $VERSION (once) into build/toxiproxy" >&2
"$GO" install "github.com/Shopify/toxiproxy/v2/cmd/server@$VERSION"
mkdir -p "$(dirname "$OUT")"
cp "$GOBIN/server" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
