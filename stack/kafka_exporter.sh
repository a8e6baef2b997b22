#!/usr/bin/env bash
# Build the Prometheus Kafka lag exporter (danielqsj/kafka_exporter) from the Go module proxy into
# .cache/bin (ignored) and print the binary's path. Cached: later runs only print the path.
#
#   bash stack/kafka_exporter.sh        # -> .cache/bin/kafka_exporter
#
# Then: kafka_exporter --kafka.server=127.0.0.1:PORT --web.listen-address=127.0.0.1:PORT \
#         --kafka.version=3.9.0   # scrape /metrics for kafka_consumergroup_lag{consumergroup=...}
set -euo pipefail

VERSION="${KAFKA_EXPORTER_VERSION:-v1.9.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
BIN="$CACHE/bin/kafka_exporter"
STAMP="$CACHE/bin/kafka_exporter.version"
FAILED="$CACHE/bin/kafka_exporter.failed"

if [[ -x "$BIN" && "$(cat "$STAMP" 2>/dev/null)" == "$VERSION" ]]; then
    echo "$BIN"
    exit 0
fi
# A failed build is remembered for an hour so that a test run does not retry it for every test.
if [[ -f "$FAILED" && -z "${KAFKA_EXPORTER_RETRY:-}" ]] \
    && [[ $(( $(date +%s) - $(stat -c %Y "$FAILED") )) -lt 3600 ]]; then
    cat "$FAILED" >&2
    exit 1
fi
if ! command -v go >/dev/null 2>&1; then
    echo "kafka_exporter: no Go toolchain (go) on PATH" | tee "$FAILED" >&2
    exit 1
fi

mkdir -p "$CACHE/bin" "$CACHE/go"
export GOBIN="$CACHE/bin" GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0
started=$(date +%s)
if ! out=$(go install "github.com/danielqsj/kafka_exporter@${VERSION}" 2>&1); then
    printf 'kafka_exporter: go install github.com/danielqsj/kafka_exporter@%s failed:\n%s\n' \
        "$VERSION" "$out" | tee "$FAILED" >&2
    exit 1
fi
rm -f "$FAILED"
echo "$VERSION" > "$STAMP"
echo "kafka_exporter ${VERSION} built in $(( $(date +%s) - started ))s" >&2
echo "$BIN"
