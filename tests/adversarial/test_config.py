"""Hostile configuration: every bad value must raise ConfigurationError naming the setting, and
no credential given in a setting may reach an error message, a log line or CLI output.
"""

from __future__ import annotations

import decimal
import fractions
import logging
import math
import threading
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk

import agent_trace
from agent_trace import _log
from tests.adversarial._support import SECRET, request_line, run_cli, span_json, write_lines
from tests.backends.otlp_recorder import OtlpHttpRecorder, closed_port


@pytest.fixture(autouse=True)
def _clean_pipeline() -> Any:
    yield
    agent_trace.shutdown(timeout_s=2)


def configure(**kwargs: Any) -> agent_trace.Settings:
    kwargs.setdefault("_env", {})
    kwargs.setdefault("local_file", False)
    return agent_trace.configure("adversarial", **kwargs)


# -- numbers and paths ----------------------------------------------------------------------------

HUGE_NUMBERS = {
    "sample_rate=10**400": {"sample_rate": 10**400},
    "export_timeout_s=10**400": {"export_timeout_s": 10**400},
    "exit_timeout_s=10**400": {"exit_timeout_s": 10**400},
    "max_queue_size=inf": {"max_queue_size": math.inf},
    "max_export_batch_size=-inf": {"max_export_batch_size": -math.inf},
    "prometheus_port=inf": {"prometheus_port": math.inf},
}


@pytest.mark.parametrize(
    "settings",
    [pytest.param(value, id=label) for label, value in HUGE_NUMBERS.items()],
)
def test_numbers_out_of_float_range_raise_configuration_error(settings: dict[str, Any]) -> None:
    with pytest.raises(agent_trace.ConfigurationError):
        configure(**settings)


BAD_VALUES = {
    "sample_rate=nan": {"sample_rate": math.nan},
    "sample_rate=-0.1": {"sample_rate": -0.1},
    "sample_rate text": {"sample_rate": "half"},
    "max_queue_size=0": {"max_queue_size": 0},
    "max_queue_size=nan": {"max_queue_size": math.nan},
    "max_queue_size=10**400": {"max_queue_size": 10**400},
    "exit_timeout_s=-1": {"exit_timeout_s": -1},
    "prometheus_port=70000": {"prometheus_port": 70000},
    "capture_content=maybe": {"capture_content": "maybe"},
    "otlp_protocol=http/json": {"otlp_protocol": "http/json"},
    "constitution_hash unicode digits": {"constitution_hash": "\uff13f2a9c01d4e5b6a7"},
    "constitution_hash with space": {"constitution_hash": "3f2a 9c01d4e5b6a7"},
    "sentry_mode": {"sentry_mode": "carrier-pigeon"},
    "env sample rate Infinity": {"_env": {"AGENT_TRACE_SAMPLE_RATE": "Infinity"}},
    "env queue 1e3": {"_env": {"AGENT_TRACE_MAX_QUEUE_SIZE": "1e3"}},
    "env sampler": {"_env": {"OTEL_TRACES_SAMPLER": "jaeger_remote"}},
    "env sampler arg nan": {
        "_env": {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "nan"}
    },
    "env metrics exporter": {"_env": {"OTEL_METRICS_EXPORTER": "otlp;rm -rf"}},
}


@pytest.mark.parametrize("settings", BAD_VALUES.values(), ids=list(BAD_VALUES))
def test_bad_values_raise_configuration_error(settings: dict[str, Any]) -> None:
    with pytest.raises(agent_trace.ConfigurationError):
        configure(**settings)


@pytest.mark.parametrize("name", ["a\x00b.jsonl", "a" * 5000])
def test_unusable_local_path_raises_configuration_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(agent_trace.ConfigurationError):
        agent_trace.configure("adversarial", local_path=str(tmp_path / name), _env={})


@pytest.mark.parametrize(
    "headers", ["x-tenant=a%0D%0AInjected:%201", {"x-tenant": "a\r\nInjected: 1"}]
)
def test_header_values_with_line_breaks_raise_configuration_error(headers: Any) -> None:
    with OtlpHttpRecorder() as recorder, pytest.raises(agent_trace.ConfigurationError):
        configure(otlp_endpoint=recorder.traces_url, otlp_protocol="http", otlp_headers=headers)


def test_ipv6_loopback_dsn_is_accepted() -> None:
    try:
        configure(sentry_dsn="http://abcdef0123456789@[::1]:9/1", alert_policy=False)
    finally:
        agent_trace.shutdown(timeout_s=1)


# -- arguments of the wrong type ------------------------------------------------------------------


class BytesPath:
    """A path-like object whose path is bytes, which pathlib does not take."""

    def __fspath__(self) -> bytes:
        return b"traces.jsonl"


# Each would fail with a TypeError or AttributeError, or be taken silently for something else.
WRONG_TYPES: dict[str, tuple[str, Any, str]] = {
    "service_name as an int": ("service_name", 123, "int"),
    "otlp_endpoint as an int": ("otlp_endpoint", 4317, "int"),
    "otlp_protocol as an int": ("otlp_protocol", 1, "int"),
    "otlp_headers as a list": ("otlp_headers", [("x-tenant", "a")], "list"),
    "otlp_headers with an int value": ("otlp_headers", {"x-tenant": 7}, "int"),
    "otlp_headers with a None value": ("otlp_headers", {"x-tenant": None}, "NoneType"),
    "otlp_headers with an int key": ("otlp_headers", {7: "a"}, "int"),
    "sentry_dsn as an int": ("sentry_dsn", 12345, "int"),
    "sentry_dsn as False": ("sentry_dsn", False, "bool"),
    "sentry_mode as an int": ("sentry_mode", 1, "int"),
    "sentry_environment as an int": ("sentry_environment", 1, "int"),
    "sentry_release as a float": ("sentry_release", 1.0, "float"),
    # An int of eight digits would pass the hex check once turned into text.
    "constitution_hash as an int": ("constitution_hash", 12345678, "int"),
    "local_path as an int": ("local_path", 123, "int"),
    "local_path as bytes": ("local_path", b"traces.jsonl", "bytes"),
    "local_path giving bytes": ("local_path", BytesPath(), "BytesPath"),
    "local_file as text": ("local_file", "yes", "str"),
    "local_file as an int": ("local_file", 1, "int"),
    "sample_rate as text": ("sample_rate", "0.5", "str"),
    "capture_content as text": ("capture_content", "false", "str"),
    "capture_content as an int": ("capture_content", 0, "int"),
    "resource_attributes as a list": ("resource_attributes", ["team=review"], "list"),
    "resource_attributes with a None value": ("resource_attributes", {"team": None}, "NoneType"),
    # int() would cut these to 2048 and 1 without a word.
    "max_queue_size as a fraction": ("max_queue_size", 2048.5, "float"),
    "max_export_batch_size as a fraction": ("max_export_batch_size", 1.5, "float"),
    "max_queue_size as text": ("max_queue_size", "2048", "str"),
    "schedule_delay_s as text": ("schedule_delay_s", "0.5", "str"),
    "export_timeout_s as text": ("export_timeout_s", "10", "str"),
    "exit_timeout_s as a boolean": ("exit_timeout_s", True, "bool"),
    "prometheus_port as text": ("prometheus_port", "9464", "str"),
    "prometheus_port as a float": ("prometheus_port", 9464.0, "float"),
    # bool("false") is True.
    "otlp_metrics as text": ("otlp_metrics", "false", "str"),
    "alert_policy as text": ("alert_policy", "yes", "str"),
    "alert_policy as an int": ("alert_policy", 1, "int"),
}


@pytest.mark.parametrize(("setting", "value", "kind"), WRONG_TYPES.values(), ids=list(WRONG_TYPES))
def test_arguments_of_the_wrong_type_raise_configuration_error(
    setting: str, value: Any, kind: str
) -> None:
    settings: dict[str, Any] = {
        "service_name": "adversarial",
        "otlp_endpoint": "http://127.0.0.1:4318",
        "local_file": False,
        "_env": {},
    }
    with pytest.raises(agent_trace.ConfigurationError) as raised:
        agent_trace.configure(**{**settings, setting: value})

    message = str(raised.value)
    assert message.startswith(f"{setting}=")
    assert f"not {kind}. Fix: " in message


def test_a_service_name_of_the_wrong_type_is_not_called_empty() -> None:
    with pytest.raises(agent_trace.ConfigurationError) as raised:
        agent_trace.configure(123, _env={})  # type: ignore[arg-type]

    assert str(raised.value).startswith("service_name=123: must be text, not int. Fix:")


def test_the_bad_value_is_quoted_in_the_message() -> None:
    with pytest.raises(agent_trace.ConfigurationError) as raised:
        configure(local_path=123, local_file=True)

    assert str(raised.value).startswith("local_path=123: must be text or a path, not int.")


CREDENTIALS_OF_THE_WRONG_TYPE = {
    "otlp_endpoint as bytes": {"otlp_endpoint": f"http://agent:{SECRET}@127.0.0.1:4318".encode()},
    "sentry_dsn as bytes": {"sentry_dsn": f"http://{SECRET}@127.0.0.1:9/1".encode()},
    "otlp_headers as a list": {"otlp_headers": [("authorization", f"Bearer {SECRET}")]},
    "otlp_headers next to a bad value": {"otlp_headers": {"x-key": SECRET, "x-tenant": 1}},
}


@pytest.mark.parametrize(
    "settings", CREDENTIALS_OF_THE_WRONG_TYPE.values(), ids=list(CREDENTIALS_OF_THE_WRONG_TYPE)
)
def test_wrong_type_errors_do_not_show_a_credential(settings: dict[str, Any]) -> None:
    with pytest.raises(agent_trace.ConfigurationError) as raised:
        configure(**{"otlp_endpoint": "http://127.0.0.1:4318", **settings})
    assert SECRET not in str(raised.value)


def test_a_refused_alert_policy_starts_no_thread() -> None:
    before = threading.active_count()
    with pytest.raises(agent_trace.ConfigurationError):
        configure(alert_policy="yes", otlp_endpoint="http://127.0.0.1:4318")
    assert threading.active_count() == before


def test_a_refused_alert_policy_on_reconfiguration_leaves_tracing_as_it_was(
    tmp_path: Path,
) -> None:
    configure(local_file=True, local_path=tmp_path / "traces.jsonl")
    before = agent_trace.dropped_spans()

    with pytest.raises(agent_trace.ConfigurationError, match="alert_policy"):
        configure(alert_policy="yes")
    with agent_trace.session("review"):
        pass

    assert agent_trace.force_flush(timeout_s=5) is True
    assert agent_trace.dropped_spans() == before
    assert "invoke_workflow review" in (tmp_path / "traces.jsonl").read_text()


RIGHT_TYPES_IN_OTHER_FORMS: dict[str, dict[str, Any]] = {
    "sample_rate as an int": {"sample_rate": 1},
    "sample_rate as a Fraction": {"sample_rate": fractions.Fraction(1, 4)},
    "sample_rate as a Decimal": {"sample_rate": decimal.Decimal("0.25")},
    "export_timeout_s as an int": {"export_timeout_s": 3},
    "local_path as a Path": {"local_path": Path("traces.jsonl")},
    "resource_attributes with a number": {"resource_attributes": {"replicas": 3}},
    "resource_attributes as text": {"resource_attributes": "team=review"},
    "otlp_headers as text": {"otlp_headers": "x-tenant=a"},
    "sentry_dsn empty": {"sentry_dsn": ""},
    "alert_policy False": {"alert_policy": False},
    "alert_policy an AlertPolicy": {"alert_policy": agent_trace.AlertPolicy()},
}


@pytest.mark.parametrize(
    "settings", RIGHT_TYPES_IN_OTHER_FORMS.values(), ids=list(RIGHT_TYPES_IN_OTHER_FORMS)
)
def test_values_of_the_right_type_in_other_forms_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any]
) -> None:
    monkeypatch.chdir(tmp_path)
    resolved = configure(otlp_endpoint="http://127.0.0.1:4318", **settings)
    assert resolved.service_name == "adversarial"


def test_a_resource_attribute_number_is_kept_as_its_text() -> None:
    resolved = configure(resource_attributes={"replicas": 3, "canary": True})
    assert dict(resolved.resource_attributes) == {"replicas": "3", "canary": "True"}


# -- credentials in settings ----------------------------------------------------------------------

ENDPOINTS_WITH_CREDENTIALS = {
    "bad scheme": {"otlp_endpoint": f"ftp://agent:{SECRET}@127.0.0.1/"},
    "bad port": {"otlp_endpoint": f"http://agent:{SECRET}@127.0.0.1:99999/v1/traces"},
    "white space": {"otlp_endpoint": f"http://agent:{SECRET}@127.0.0.1:4318/ v1"},
    "env endpoint": {"_env": {"OTEL_EXPORTER_OTLP_ENDPOINT": f"gopher://agent:{SECRET}@host/"}},
}


@pytest.mark.parametrize(
    "settings", ENDPOINTS_WITH_CREDENTIALS.values(), ids=list(ENDPOINTS_WITH_CREDENTIALS)
)
def test_endpoint_errors_do_not_show_the_password(settings: dict[str, Any]) -> None:
    with pytest.raises(agent_trace.ConfigurationError) as raised:
        configure(**settings)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"otlp_headers": f"authorization=Bearer {SECRET},oops"},
        {"otlp_headers": f"api-key={SECRET},=nothing"},
        {"_env": {"OTEL_EXPORTER_OTLP_HEADERS": f"x-token={SECRET},broken"}},
    ],
    ids=["argument bearer", "argument api-key", "environment"],
)
def test_header_errors_do_not_show_other_header_values(settings: dict[str, Any]) -> None:
    with pytest.raises(agent_trace.ConfigurationError) as raised:
        configure(otlp_endpoint="http://127.0.0.1:4318", **settings)
    assert SECRET not in str(raised.value)


DSNS = [
    f"http://{SECRET}@127.0.0.1/not-a-number",
    f"ftp://{SECRET}@127.0.0.1/1",
    f"http://{SECRET}@/1",
    f"http://{SECRET}:{SECRET}@127.0.0.1:port/1",
    f"http://{SECRET}@127.0.0.1/1 2",
    f"{SECRET}@127.0.0.1/1",
    f"http:/{SECRET}@127.0.0.1/1",
]


@pytest.mark.parametrize("dsn", DSNS)
def test_dsn_errors_never_show_the_key(dsn: str) -> None:
    with pytest.raises(agent_trace.ConfigurationError) as raised:
        configure(sentry_dsn=dsn)
    assert SECRET not in str(raised.value)


def test_failed_export_log_does_not_show_endpoint_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _log._reset_for_tests()
    port = closed_port()
    configure(
        otlp_endpoint=f"http://agent:{SECRET}@127.0.0.1:{port}/v1/traces",
        otlp_protocol="http",
        export_timeout_s=0.5,
        schedule_delay_s=0.01,
    )
    with caplog.at_level(logging.DEBUG):
        with agent_trace.session("lost"):
            pass
        agent_trace.force_flush(timeout_s=5)
        status = agent_trace.sink_status()
    assert status["otlp"].startswith("failing")
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("agent_trace")]
    assert any("could not be delivered" in message for message in ours)
    assert [message for message in ours if SECRET in message] == []


def test_sink_status_does_not_show_endpoint_password() -> None:
    port = closed_port()
    configure(
        otlp_endpoint=f"http://agent:{SECRET}@127.0.0.1:{port}/v1/traces",
        otlp_protocol="http",
        export_timeout_s=0.5,
        schedule_delay_s=0.01,
    )
    with agent_trace.session("lost"):
        pass
    agent_trace.force_flush(timeout_s=5)
    assert SECRET not in repr(agent_trace.sink_status())


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "traces.jsonl", request_line(span_json()))


def test_replay_output_does_not_show_endpoint_password(trace_file: Path) -> None:
    with OtlpHttpRecorder() as recorder:
        endpoint = recorder.traces_url.replace("http://", f"http://agent:{SECRET}@")
        result = run_cli(
            "replay",
            str(trace_file),
            "--otlp-endpoint",
            endpoint,
            "--otlp-protocol",
            "http",
            "--no-progress",
            "--timeout",
            "5",
        )
        assert recorder.requests, "the replay did not reach the recorder"
    assert result.code == 0
    assert SECRET.encode() not in result.stdout + result.stderr


def test_doctor_output_does_not_show_endpoint_password() -> None:
    with OtlpHttpRecorder() as recorder:
        endpoint = recorder.traces_url.replace("http://", f"http://agent:{SECRET}@")
        result = run_cli(
            "doctor", "--otlp-endpoint", endpoint, "--otlp-protocol", "http", "--timeout", "5"
        )
    assert result.code == 0
    assert SECRET.encode() not in result.stdout + result.stderr


def test_doctor_output_does_not_show_the_dsn_key() -> None:
    with OtlpHttpRecorder() as recorder:
        dsn = f"http://{SECRET}@127.0.0.1:{recorder.port}/1"
        result = run_cli("doctor", "--sentry-dsn", dsn, "--timeout", "5")
    assert SECRET.encode() not in result.stdout + result.stderr
    assert b"***@127.0.0.1" in result.stdout


# -- reconfiguring --------------------------------------------------------------------------------


def test_reconfiguring_many_times_leaks_no_threads(tmp_path: Path) -> None:
    before = threading.active_count()
    for index in range(40):
        agent_trace.configure("adversarial", local_path=tmp_path / "t.jsonl", _env={})
        with agent_trace.session(f"round{index}"):
            pass
    assert threading.active_count() <= before + 3
    assert agent_trace.shutdown() is True
    assert agent_trace.shutdown() is True
    assert threading.active_count() <= before + 1


def test_model_between_shutdown_and_configure(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    agent_trace.configure("adversarial", local_path=path, _env={})
    agent_trace.shutdown()
    with agent_trace.session("unconfigured") as session, session.turn("ethics"):
        agent_trace.monitor_performance_target("latency", 1.0, 2.0)
    assert agent_trace.force_flush() is True
    agent_trace.configure("adversarial", local_path=path, _env={})
    with agent_trace.session("again"):
        pass
    assert agent_trace.shutdown() is True
    text = path.read_text(encoding="utf-8")
    assert "invoke_workflow again" in text
    assert "invoke_workflow unconfigured" not in text


def test_sentry_client_is_released_after_shutdown() -> None:
    with OtlpHttpRecorder() as recorder:
        dsn = f"http://abcdef0123456789@127.0.0.1:{recorder.port}/1"
        for _ in range(3):
            configure(sentry_dsn=dsn, alert_policy=False)
            agent_trace.shutdown(timeout_s=2)
    assert not sentry_sdk.get_client().is_active()
