#!/usr/bin/env bash
# The whole test suite from a fresh machine: virtualenv, package with test extras, the real
# backends (Jaeger built from the Go module proxy, the Spotlight sidecar from npm, promtool
# from Debian), then lint, types and every test, integration tests included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
bash tests/backends/setup.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check agent_trace
.venv/bin/mypy agent_trace
.venv/bin/pytest -q -p no:cacheprovider "$@"
