"""Settings from arguments and the environment: precedence, env names, and helpful errors.

Every test passes its environment explicitly (`env=` / `_env=`), so the machine's own `OTEL_*`
or `SENTRY_DSN` never leak in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import agent_trace
from agent_trace._config import ConfigurationError, resolve_settings
from agent_trace.testing import capture_spans

SECRET_KEY = "0123456789abcdef0123456789abcdef"


def settings_from(env: dict[str, str], **kwargs: object) -> agent_trace.Settings:
    return resolve_settings(env=env, **kwargs)  # type: ignore[arg-type]


def config_error(env: dict[str, str] | None = None, **kwargs: object) -> str:
    with pytest.raises(ConfigurationError) as info:
        resolve_settings(env=env or {}, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# -- bad settings: name the setting, show the bad value, say the fix --------------------------


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        (f"http://127.0.0.1:9000/{SECRET_KEY}", "public key"),
        (f"http://{SECRET_KEY}@127.0.0.1:9000/", "project id"),
        (f"http://{SECRET_KEY}@127.0.0.1:9000/not-a-number", "project id"),
        (f"ftp://{SECRET_KEY}@127.0.0.1:9000/1", "scheme"),
        # Sent in every request's X-Sentry-Auth header: only what a header can carry as is.
        ("http://k\u00e9y\u2603@127.0.0.1:9000/1", "public key"),
        ("http://key%0d%0aX-Evil:1@127.0.0.1:9000/1", "public key"),
    ],
    ids=["no-key", "no-project", "non-numeric-project", "bad-scheme", "non-ascii-key", "crlf-key"],
)
def test_malformed_dsn_names_the_setting_and_the_fix(dsn: str, problem: str) -> None:
    message = config_error(sentry_dsn=dsn)

    assert message.startswith("sentry_dsn=")
    assert problem in message
    assert "Fix:" in message
    assert "127.0.0.1:9000" in message  # the bad value is shown (without its key)


@pytest.mark.parametrize(
    "dsn",
    [
        f"http://{SECRET_KEY}@127.0.0.1:9000/",
        f"ftp://{SECRET_KEY}@127.0.0.1:9000/1",
        f"http://{SECRET_KEY}:{SECRET_KEY[::-1]}@127.0.0.1:9000/x",
        f"{SECRET_KEY}@127.0.0.1:9000/1",
        f"http:/{SECRET_KEY}@127.0.0.1:9000/1",
        f"https://{SECRET_KEY}@127.0.0.1:port/1",
    ],
    ids=["no-project", "bad-scheme", "key-and-secret", "no-scheme", "one-slash", "bad-port"],
)
def test_dsn_key_never_appears_in_the_error(dsn: str) -> None:
    message = config_error(sentry_dsn=dsn)

    assert SECRET_KEY not in message
    assert SECRET_KEY[::-1] not in message


def test_dsn_from_the_environment_is_named_by_its_variable() -> None:
    message = config_error({"SENTRY_DSN": f"http://{SECRET_KEY}@127.0.0.1:9000/"})

    assert message.startswith("SENTRY_DSN=")
    assert SECRET_KEY not in message


def test_unknown_protocol_is_refused_with_the_choices() -> None:
    message = config_error(otlp_protocol="http/json")

    assert message.startswith("otlp_protocol='http/json'")
    assert "grpc" in message
    assert "http" in message


def test_unknown_protocol_from_the_environment_names_the_variable() -> None:
    message = config_error({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})

    assert message.startswith("OTEL_EXPORTER_OTLP_PROTOCOL='thrift'")


def test_sample_rate_above_one_is_refused() -> None:
    message = config_error(sample_rate=1.5)

    assert message.startswith("sample_rate=1.5")
    assert "0.0" in message
    assert "1.0" in message
    assert "Fix:" in message


@pytest.mark.parametrize("rate", [-0.1, float("nan"), "half", True])
def test_other_bad_sample_rates_are_refused(rate: object) -> None:
    assert config_error(sample_rate=rate).startswith("sample_rate=")


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_service_name_is_refused(name: str) -> None:
    message = config_error(service_name=name)

    assert message.startswith(f"service_name={name!r}")
    assert "Fix:" in message


def test_sampler_argument_that_is_not_a_number_is_refused() -> None:
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "abc"}

    message = config_error(env)

    assert message.startswith("OTEL_TRACES_SAMPLER_ARG='abc'")
    assert "not a number" in message
    assert "Fix:" in message


def test_sampler_argument_alone_is_validated_too() -> None:
    assert config_error({"OTEL_TRACES_SAMPLER_ARG": "abc"}).startswith("OTEL_TRACES_SAMPLER_ARG=")


def test_a_sampler_other_than_a_ratio_is_refused_with_the_reason() -> None:
    message = config_error({"OTEL_TRACES_SAMPLER": "jaeger_remote"})

    assert message.startswith("OTEL_TRACES_SAMPLER='jaeger_remote'")
    assert "parentbased_traceidratio" in message


def test_endpoint_with_spaces_is_refused() -> None:
    message = config_error(otlp_endpoint="http://127.0.0.1 :4317")

    assert message.startswith("otlp_endpoint='http://127.0.0.1 :4317'")
    assert "white space" in message
    assert "Fix:" in message


def test_endpoint_from_the_environment_is_named_by_its_variable() -> None:
    message = config_error({"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4317"})

    assert message.startswith("OTEL_EXPORTER_OTLP_ENDPOINT='127.0.0.1:4317'")
    assert "http://" in message


def test_unknown_sentry_mode_is_refused() -> None:
    assert config_error(sentry_mode="spans").startswith("sentry_mode='spans'")


def test_constitution_hash_that_is_not_hex_is_refused() -> None:
    message = config_error({"CONSTITUTIONAL_HASH": "not-a-hash"})

    assert message.startswith("CONSTITUTIONAL_HASH='not-a-hash'")
    assert "SHA-256" in message


def test_local_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    message = config_error(local_path=tmp_path)

    assert message.startswith("local_path=")
    assert "directory" in message


def test_configure_raises_before_touching_the_running_pipeline() -> None:
    with capture_spans() as captured:
        before = agent_trace.settings()

        with pytest.raises(ValueError, match="sample_rate"):
            agent_trace.configure("svc", sample_rate=1.5, _env={})

        assert agent_trace.settings() is before
        with agent_trace.session("still_traced"):
            pass
        assert [s.name for s in captured.spans] == ["invoke_workflow still_traced"]


# -- the environment and precedence ----------------------------------------------------------


def test_environment_names_from_the_ecosystem_are_read(tmp_path: Path) -> None:
    env = {
        "OTEL_SERVICE_NAME": "coordinator",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=gov%20ai,x-tier=1",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=governance",
        "SENTRY_DSN": f"https://{SECRET_KEY}@sentry.example.invalid/42",
        "SENTRY_ENVIRONMENT": "staging",
        "SENTRY_RELEASE": "coordinator@1.2.3",
        "CONSTITUTIONAL_HASH": "CDD01EF066BC6CF2",
        "AGENT_TRACE_SENTRY_MODE": "otlp",
        "AGENT_TRACE_LOCAL_PATH": str(tmp_path / "spans.jsonl"),
        "AGENT_TRACE_CAPTURE_CONTENT": "true",
        "AGENT_TRACE_MAX_QUEUE_SIZE": "100",
        "AGENT_TRACE_MAX_EXPORT_BATCH_SIZE": "10",
    }

    settings = settings_from(env)

    assert settings.service_name == "coordinator"
    assert settings.otlp_endpoint == "http://127.0.0.1:4317"
    assert settings.otlp_protocol == "grpc"
    assert dict(settings.otlp_headers) == {"x-team": "gov ai", "x-tier": "1"}
    assert settings.sample_rate == 0.25
    assert dict(settings.resource_attributes) == {
        "deployment.environment": "test",
        "team": "governance",
    }
    assert settings.sentry_dsn is not None
    assert settings.sentry_dsn.public_key == SECRET_KEY
    assert settings.sentry_dsn.project_id == "42"
    assert settings.sentry_environment == "staging"
    assert settings.sentry_release == "coordinator@1.2.3"
    assert settings.constitution_hash == "cdd01ef066bc6cf2"
    assert settings.sentry_mode == "otlp"
    assert settings.local_path == tmp_path / "spans.jsonl"
    assert settings.capture_content is True
    assert settings.max_queue_size == 100
    assert settings.max_export_batch_size == 10
    assert settings.sinks == ("otlp", "sentry", "local_file")


def test_signal_specific_variables_win_over_the_generic_ones() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1111",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:2222",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=generic",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=traces",
    }

    settings = settings_from(env)

    assert settings.otlp_endpoint == "http://127.0.0.1:2222"
    assert settings.otlp_protocol == "http"
    assert dict(settings.otlp_headers) == {"a": "traces"}


def test_explicit_arguments_win_over_the_environment(tmp_path: Path) -> None:
    env = {
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1111",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "SENTRY_DSN": "http://envkey@127.0.0.1:1/1",
        "CONSTITUTIONAL_HASH": "aaaaaaaaaaaaaaaa",
        "AGENT_TRACE_CAPTURE_CONTENT": "true",
        "AGENT_TRACE_LOCAL_PATH": str(tmp_path / "env.jsonl"),
    }

    settings = settings_from(
        env,
        service_name="from-arg",
        otlp_endpoint="http://127.0.0.1:2222",
        otlp_protocol="grpc",
        sample_rate=0.75,
        sentry_dsn="http://argkey@127.0.0.1:2/2",
        constitution_hash="bbbbbbbbbbbbbbbb",
        capture_content=False,
        local_path=tmp_path / "arg.jsonl",
    )

    assert settings.service_name == "from-arg"
    assert settings.otlp_endpoint == "http://127.0.0.1:2222"
    assert settings.otlp_protocol == "grpc"
    assert settings.sample_rate == 0.75
    assert settings.sentry_dsn is not None and settings.sentry_dsn.public_key == "argkey"
    assert settings.constitution_hash == "bbbbbbbbbbbbbbbb"
    assert settings.capture_content is False
    assert settings.local_path == tmp_path / "arg.jsonl"


def test_explicit_argument_wins_over_a_bad_environment_value() -> None:
    settings = settings_from({"OTEL_TRACES_SAMPLER_ARG": "abc"}, sample_rate=0.5)

    assert settings.sample_rate == 0.5


def test_configure_reads_the_environment_it_is_given() -> None:
    env = {"OTEL_SERVICE_NAME": "env-service", "CONSTITUTIONAL_HASH": "0123456789abcdef"}

    try:
        settings = agent_trace.configure(local_file=False, _env=env)
        assert settings.service_name == "env-service"
        assert settings.constitution_hash == "0123456789abcdef"
        assert agent_trace.settings() is settings
    finally:
        agent_trace.shutdown(timeout_s=1.0)


def test_blank_environment_values_count_as_unset() -> None:
    settings = settings_from({"OTEL_SERVICE_NAME": "  ", "OTEL_EXPORTER_OTLP_ENDPOINT": ""})

    assert settings.service_name == "agent-trace"
    assert settings.otlp_endpoint is None


@pytest.mark.parametrize(
    ("sampler", "arg", "rate"),
    [
        ("always_on", None, 1.0),
        ("always_off", None, 0.0),
        ("parentbased_always_off", None, 0.0),
        ("traceidratio", "0.3", 0.3),
        ("parentbased_traceidratio", None, 1.0),
    ],
)
def test_otel_sampler_variables_become_one_ratio(
    sampler: str, arg: str | None, rate: float
) -> None:
    env = {"OTEL_TRACES_SAMPLER": sampler}
    if arg is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = arg

    assert settings_from(env).sample_rate == rate


# -- the OTLP endpoint path ------------------------------------------------------------------


def test_http_protocol_appends_the_traces_path_to_the_generic_endpoint() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }

    assert settings_from(env).otlp_endpoint == "http://127.0.0.1:4318/v1/traces"


def test_http_protocol_keeps_the_signal_specific_endpoint_as_given() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/custom/path",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }

    assert settings_from(env).otlp_endpoint == "http://127.0.0.1:4318/custom/path"


def test_grpc_protocol_keeps_the_generic_endpoint_as_given() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}

    assert settings_from(env).otlp_endpoint == "http://127.0.0.1:4317"


# -- defaults and derived values -------------------------------------------------------------


def test_with_no_sink_configured_the_local_file_is_the_default() -> None:
    settings = settings_from({})

    assert settings.sinks == ("local_file",)
    assert settings.local_path == Path(".agent-trace") / "traces.jsonl"
    assert settings.sample_rate == 1.0
    assert settings.capture_content is False


def test_a_remote_sink_turns_the_default_local_file_off() -> None:
    settings = settings_from({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})

    assert settings.sinks == ("otlp",)


def test_the_local_file_can_run_beside_the_remote_sinks() -> None:
    settings = settings_from(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "AGENT_TRACE_LOCAL_FILE": "1"}
    )

    assert settings.sinks == ("otlp", "local_file")


def test_sentry_endpoints_are_derived_from_the_dsn() -> None:
    settings = settings_from({}, sentry_dsn=f"https://{SECRET_KEY}@o1.example.invalid:8443/17")

    dsn = settings.sentry_dsn
    assert dsn is not None
    assert (
        dsn.otlp_traces_url == "https://o1.example.invalid:8443/api/17/integration/otlp/v1/traces/"
    )
    assert dsn.envelope_url == "https://o1.example.invalid:8443/api/17/envelope/"
    assert dsn.auth_header == f"Sentry sentry_key={SECRET_KEY}"
    assert SECRET_KEY not in dsn.redacted


def test_batch_larger_than_queue_is_refused() -> None:
    message = config_error(max_queue_size=10, max_export_batch_size=20)

    assert message.startswith("max_export_batch_size=20")


def test_explicit_http_endpoint_without_a_path_gets_the_traces_path() -> None:
    bare = resolve_settings(env={}, otlp_endpoint="http://127.0.0.1:4318", otlp_protocol="http")
    custom = resolve_settings(
        env={}, otlp_endpoint="http://127.0.0.1:4318/collector/traces", otlp_protocol="http"
    )
    assert bare.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert custom.otlp_endpoint == "http://127.0.0.1:4318/collector/traces"


def test_metrics_over_otlp_follow_otel_metrics_exporter() -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    assert resolve_settings(env=base).otlp_metrics is False
    assert resolve_settings(env={**base, "OTEL_METRICS_EXPORTER": "otlp"}).otlp_metrics is True
    with pytest.raises(ValueError, match=r"OTEL_METRICS_EXPORTER=.statsd.*Fix"):
        resolve_settings(env={**base, "OTEL_METRICS_EXPORTER": "statsd"})
    with pytest.raises(ValueError, match="need an endpoint"):
        resolve_settings(env={"OTEL_METRICS_EXPORTER": "otlp"})


# -- Sentry's environment and release: refused exactly where Sentry would drop the event -----

SENTRY_NAMES = [
    "production",
    "staging eu",
    "x" * 64,
    "x" * 65,
    "x" * 200,
    "x" * 201,
    "a/b",
    "a\\b",
    "a\tb",
    "a\nb",
    "a\rb",
    "None",
    ".",
    "..",
    "latest",
    "app@1.4.2",
    " ",
]


def sentry_drops(field: str, value: str) -> bool:
    from tests.backends.relay import store_normalizer

    event = store_normalizer().normalize_event({"message": "m", field: value})
    return event.get(field) != value or any(
        error.get("name") == field for error in event.get("errors") or ()
    )


@pytest.mark.parametrize("value", SENTRY_NAMES, ids=range(len(SENTRY_NAMES)))
@pytest.mark.parametrize("field", ["environment", "release"])
def test_sentry_environment_and_release_are_refused_where_sentry_drops_them(
    field: str, value: str
) -> None:
    setting = f"sentry_{field}"
    if sentry_drops(field, value):
        message = config_error(**{setting: value})
        assert message.startswith(f"{setting}=")
        assert "Fix:" in message
        # From the environment (where values are stripped, and a blank one is unset) the
        # variable is named instead.
        variable = f"SENTRY_{field.upper()}"
        if value.strip() and sentry_drops(field, value.strip()):
            assert config_error(env={variable: value}).startswith(f"{variable}=")
    else:
        settings = resolve_settings(env={}, **{setting: value})  # type: ignore[arg-type]
        assert getattr(settings, setting) == value
