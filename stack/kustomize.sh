#!/usr/bin/env bash
# Build kustomize (sigs.k8s.io/kustomize/kustomize/v5, pinned) from the Go module proxy into
# .cache/bin (ignored) and print the binary's path; cached after the first build (~30 s).
# Debian has no kustomize package; the manifest tests (tests/unit/deploy) render every overlay
# with it, exactly as `kubectl apply -k` / Argo CD would.
set -euo pipefail

VERSION="${KUSTOMIZE_VERSION:-v5.5.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
BIN="$CACHE/bin/kustomize"
STAMP="$CACHE/bin/kustomize.version"

if [[ -x "$BIN" && "$(cat "$STAMP" 2>/dev/null)" == "$VERSION" ]]; then
    echo "$BIN"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "kustomize: no Go toolchain (go) on PATH to build kustomize $VERSION" >&2
    exit 1
fi
mkdir -p "$CACHE/bin" "$CACHE/go"
export GOBIN="$CACHE/bin" GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0
go install "sigs.k8s.io/kustomize/kustomize/v5@${VERSION}" >&2
echo "$VERSION" > "$STAMP"
echo "$BIN"
