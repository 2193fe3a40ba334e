#!/usr/bin/env bash
# Installs what agent-trace's integration tests run against, once; later runs only check.
#
#   bash tests/backends/setup.sh
#
# - Spotlight's node_modules (npm ci from the committed package-lock.json; Node 20 or newer),
# - the Jaeger v2 binary, built from the Go module pinned in jaeger_build/ into a cache outside
#   the repository (many minutes the first time),
# - promtool (Debian's `prometheus` package), without leaving a Prometheus server running,
# - the Python test dependencies in .venv when some are missing.
#
# Works on a fresh Debian machine as root; apt-get update runs at most once, and only when
# something has to be installed. Prints one line per step saying what it did.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
apt_updated=0

say() { printf 'setup: %s\n' "$*"; }

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        say "cannot install $* without root; run this script as root" >&2
        exit 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq > /dev/null
        apt_updated=1
    fi
    say "apt-get install $*"
    local log
    log="$(mktemp)"
    # No recommends: prometheus recommends prometheus-node-exporter, a server on every interface.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" > "$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# Runs apt_install with services kept from starting: a package's postinst may start its
# daemon (prometheus does, on port 9090 of every interface). policy-rc.d answering 101 is
# Debian's switch for that; one already present is left as it is.
apt_install_without_services() {
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        created=1
    fi
    apt_install "$@" || { [ "$created" -eq 0 ] || rm -f "$policy"; return 1; }
    [ "$created" -eq 0 ] || rm -f "$policy"
}

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# --- Node and Spotlight ------------------------------------------------------------------

if ! command -v node > /dev/null || [ "$(node_major)" -lt 20 ]; then
    apt_install nodejs
fi
if ! command -v npm > /dev/null; then
    # Debian ships npm apart from nodejs; NodeSource's nodejs package includes it.
    apt_install npm
fi
if [ "$(node_major)" -lt 20 ]; then
    say "Node $(node --version 2>/dev/null || echo '(none)') is too old: Spotlight needs 20 or newer" >&2
    exit 1
fi

spotlight_dir="$here/spotlight"
installed_lock="$spotlight_dir/node_modules/.package-lock.json"
if [ -f "$installed_lock" ] && [ "$installed_lock" -nt "$spotlight_dir/package-lock.json" ]; then
    say "Spotlight: node_modules up to date ($(node -p 'require("'"$spotlight_dir"'/node_modules/@spotlightjs/spotlight/package.json").version'))"
else
    say "Spotlight: npm ci in $spotlight_dir"
    # No install scripts: none of these packages needs one, and none should run.
    (cd "$spotlight_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

# --- Go and Jaeger -----------------------------------------------------------------------

if ! command -v go > /dev/null && [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go > /dev/null; then
    # Debian's Go may be older than go.mod asks for; the go command then fetches the newer
    # toolchain itself, as a module through the Go module proxy.
    apt_install golang-go ca-certificates
fi
say "Jaeger: $(go version)"
start=$SECONDS
binary="$(bash "$here/jaeger_build/build.sh")"
if [ $((SECONDS - start)) -gt 5 ]; then
    say "Jaeger: built $binary in $((SECONDS - start)) s"
else
    say "Jaeger: binary present at $binary"
fi
"$binary" validate --config "file:$here/jaeger-test.yaml" > /dev/null 2>&1 \
    || { say "Jaeger rejects $here/jaeger-test.yaml:" >&2; "$binary" validate --config "file:$here/jaeger-test.yaml" >&2; exit 1; }
say "Jaeger: jaeger-test.yaml validates"

# --- OpenTelemetry Collector (for the collectors/ tests) ---------------------------------------

start=$SECONDS
otelcol="$(bash "$repo/collectors/otel-collector/build.sh")"
if [ $((SECONDS - start)) -gt 5 ]; then
    say "Collector: built $otelcol in $((SECONDS - start)) s"
else
    say "Collector: binary present at $otelcol"
fi

# --- promtool ----------------------------------------------------------------------------

if command -v promtool > /dev/null; then
    say "promtool: present ($(promtool --version 2>&1 | head -n 1))"
else
    apt_install_without_services prometheus
    say "promtool: installed ($(promtool --version 2>&1 | head -n 1))"
fi
# Only promtool is wanted from that package. Its service stays stopped and off at boot;
# systemctl edits the unit links even where systemd is not running.
if [ -f /lib/systemd/system/prometheus.service ] && command -v systemctl > /dev/null; then
    if [ -d /run/systemd/system ] && systemctl is-active --quiet prometheus.service; then
        systemctl stop prometheus.service
        say "prometheus.service: stopped"
    fi
    if [ "$(systemctl is-enabled prometheus.service 2> /dev/null)" = "enabled" ]; then
        systemctl disable --quiet prometheus.service
        say "prometheus.service: disabled at boot"
    fi
fi
if [ -x /etc/init.d/prometheus ] && command -v update-rc.d > /dev/null \
    && ls /etc/rc[2345].d/S*prometheus > /dev/null 2>&1; then
    update-rc.d prometheus disable > /dev/null 2>&1
    say "prometheus init script: disabled at boot"
fi
if command -v ss > /dev/null && ss -ltn 'sport = :9090' | grep -q LISTEN; then
    say "warning: something listens on port 9090 (a Prometheus server?); not started here" >&2
fi

# --- ss (the loopback-only test reads its listeners) ------------------------------------

if command -v ss > /dev/null; then
    say "ss: present"
else
    apt_install iproute2
    say "ss: installed (iproute2)"
fi

# --- Python test dependencies ------------------------------------------------------------

venv_python="$repo/.venv/bin/python"
if [ ! -x "$venv_python" ]; then
    say "no virtualenv at $repo/.venv: create it and run .venv/bin/pip install -e '.[test]'"
elif "$venv_python" -c 'import sentry_relay, grpc, psutil, sentry_sdk, opentelemetry.proto' 2> /dev/null; then
    say "Python: test dependencies present in .venv"
else
    say "Python: installing test dependencies into .venv"
    "$venv_python" -m pip install --quiet -e "$repo[test]"
fi

say "done"
