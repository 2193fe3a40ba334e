#!/usr/bin/env bash
# Builds the OpenTelemetry Collector described by builder-config.yaml beside this script, once,
# into a cache outside the repository keyed by version, and prints the binary's path:
#
#   bash collectors/otel-collector/build.sh    # -> ~/.cache/agent-trace/otelcol/0.140.1/otelcol
#
# Needs Go and the Go module proxy. The builder (ocb) of the manifest's core release is
# installed into the cache first. A later run with the binary present only prints its path;
# a changed manifest is rebuilt, as a hash of it is stored beside the binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
manifest="$here/builder-config.yaml"
version="$(awk '$1 == "version:" { print $2; exit }' "$manifest")"
# The builder belongs to the Collector core release the manifest's core modules are at.
builder_version="$(awk '/go.opentelemetry.io\/collector\/receiver\/otlpreceiver / { print $NF; exit }' "$manifest")"
manifest_hash="$(sha256sum "$manifest" | cut -c1-12)"
cache="${AGENT_TRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-trace}/otelcol/$version"
binary="$cache/otelcol"
stamp="$cache/otelcol.manifest-sha256"

if [ -x "$binary" ] && [ "$(cat "$stamp" 2> /dev/null)" = "$manifest_hash" ]; then
    echo "$binary"
    exit 0
fi

if ! command -v go > /dev/null && [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
fi
mkdir -p "$cache/tools"
builder="$cache/tools/builder-$builder_version"
if [ ! -x "$builder" ]; then
    echo "installing the Collector builder $builder_version into $cache/tools" >&2
    GOBIN="$cache/tools" go install "go.opentelemetry.io/collector/cmd/builder@$builder_version"
    mv "$cache/tools/builder" "$builder"
fi

# The builder writes its generated sources and the binary under output_path (./build),
# relative to its working directory: a scratch directory in the cache, never the repository.
work="$cache/src"
rm -rf "$work"
mkdir -p "$work"
cp "$manifest" "$work/builder-config.yaml"
echo "building the Collector v$version into $cache (first time only; this takes a while)" >&2
(cd "$work" && "$builder" --config builder-config.yaml >&2)
mv "$work/build/otelcol" "$binary.tmp"
mv "$binary.tmp" "$binary"
echo "$manifest_hash" > "$stamp"
rm -rf "$work"
echo "$binary"
