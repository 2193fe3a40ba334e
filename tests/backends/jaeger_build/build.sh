#!/usr/bin/env bash
# Builds the Jaeger v2 binary pinned by go.mod beside this script, once, into a
# cache outside the repository keyed by version, and prints the binary's path.
# A fresh machine spends many minutes here; later runs reuse the cached binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(awk '$1 == "github.com/jaegertracing/jaeger" { print $2 }' "$here/go.mod")"
cache="${AGENT_TRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-trace}/jaeger/$version"
binary="$cache/jaeger"

if [ ! -x "$binary" ]; then
    mkdir -p "$cache"
    echo "building Jaeger $version into $cache (first time only; this takes a while)" >&2
    (cd "$here" && GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w" -o "$binary.tmp" \
        github.com/jaegertracing/jaeger/cmd/jaeger)
    mv "$binary.tmp" "$binary"
fi
echo "$binary"
