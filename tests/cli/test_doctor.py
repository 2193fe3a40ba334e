"""`agent-trace doctor` against the real Jaeger and Spotlight, and against a closed port."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.backends.jaeger import Jaeger
from tests.backends.otlp_recorder import closed_port
from tests.backends.spotlight import Spotlight

pytestmark = pytest.mark.integration


def _doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("OTEL_", "SENTRY_", "AGENT_TRACE_", "CONSTITUTIONAL_"))}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent_trace.cli", "doctor", "--timeout", "5", *args],
        capture_output=True, text=True, timeout=60, env=clean,
    )


def test_passes_for_jaeger_and_spotlight_and_confirms_the_trace(
    jaeger: Jaeger, spotlight: Spotlight
) -> None:
    secret_key = "k" + uuid.uuid4().hex
    dsn = spotlight.dsn.replace("public@", f"{secret_key}@")
    result = _doctor(
        "--otlp-endpoint", jaeger.otlp_grpc_endpoint,
        "--jaeger-query-url", jaeger.query_url,
        env={"SENTRY_DSN": dsn, "OTEL_SERVICE_NAME": f"doctor-{uuid.uuid4().hex[:6]}"},
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PASS  otlp" in result.stdout
    assert "PASS  sentry" in result.stdout
    assert "PASS  jaeger" in result.stdout
    assert secret_key not in output
    trace_id = result.stdout.split("sent test trace ")[1].split()[0]
    assert jaeger.get_trace(trace_id) is not None
    transactions = spotlight.wait_for_transactions(1)
    assert transactions[0]["contexts"]["trace"]["trace_id"] == trace_id


def test_fails_with_exit_1_for_a_closed_port(jaeger: Jaeger) -> None:
    port = closed_port()
    result = _doctor("--otlp-endpoint", f"http://127.0.0.1:{port}",
                     "--jaeger-query-url", jaeger.query_url)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  otlp" in result.stdout
    assert "FAIL  jaeger" in result.stdout
    assert "Traceback" not in result.stderr


def test_fails_for_a_sentry_dsn_nobody_answers() -> None:
    port = closed_port()
    secret_key = "k" + uuid.uuid4().hex
    result = _doctor("--sentry-dsn", f"http://{secret_key}@127.0.0.1:{port}/0")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  sentry" in result.stdout
    assert secret_key not in result.stdout + result.stderr


def test_bad_setting_exits_2_naming_it() -> None:
    result = _doctor("--otlp-endpoint", "http://127.0.0.1:4317 extra")
    assert result.returncode == 2
    assert "otlp_endpoint" in result.stderr
    assert "Traceback" not in result.stderr
