"""Settings from arguments and the environment, validated once at `configure()`.

Explicit arguments win over environment variables; environment variables follow the names the
OpenTelemetry and Sentry ecosystems already use, and `AGENT_TRACE_*` for the rest. Every
problem raises `ConfigurationError` naming the setting, the bad value and the fix.

Text is parsed only where it comes from the environment: an argument must already have its
type (`sample_rate=0.5`, `capture_content=True`, `local_path=Path(...)`), and one of another
type is refused rather than converted.
"""

from __future__ import annotations

import decimal
import math
import numbers
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigurationError", "SentryDsn", "Settings", "resolve_settings", "wrong_type"]

DEFAULT_LOCAL_PATH = Path(".agent-trace") / "traces.jsonl"
_HASH_RE = re.compile(r"^[0-9a-f]{8,64}$")
_PROTOCOLS = {"grpc": "grpc", "http": "http", "http/protobuf": "http"}
_SENTRY_MODES = ("envelope", "otlp")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigurationError(ValueError):
    """A setting given to `configure()` (or read from the environment) is not usable.

    The message names the setting, quotes the bad value and says how to fix it.
    """


def _fail(setting: str, value: object, problem: str, fix: str) -> ConfigurationError:
    return ConfigurationError(f"{setting}={value!r}: {problem}. Fix: {fix}")


# An argument is used as given, unlike text from the environment, which is parsed: one of the
# wrong type is refused first, before a conversion can fail with a TypeError (`Path(123)`) or
# hide the mistake (`int(2.5)` is 2, `str(None)` a header value, `bool("false")` is True).
_NUMBER = (numbers.Real, decimal.Decimal)
_WHOLE = (numbers.Integral,)
_TEXT = (str,)
_FLAG = (bool,)


def wrong_type(
    setting: str, value: object, wanted: str, fix: str, *, shown: str | None = None
) -> ConfigurationError:
    """The error for an argument of the wrong type: what it is, and what it should be.

    `shown` replaces the value in the message when the value may carry a credential.
    """
    problem = f"must be {wanted}, not {type(value).__name__}"
    return _fail(setting, value if shown is None else shown, problem, fix)


def _expect(
    value: object,
    setting: str,
    kinds: tuple[type, ...],
    wanted: str,
    fix: str,
    *,
    shown: str | None = None,
) -> None:
    """Refuse an argument that is none of `kinds`; True and False are no numbers here."""
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise wrong_type(setting, value, wanted, fix, shown=shown)


@dataclass(frozen=True)
class SentryDsn:
    """A parsed Sentry DSN. `public_key` is a secret for logging purposes: never print `raw`."""

    scheme: str
    public_key: str
    host: str
    project_id: str
    path_prefix: str = ""

    @property
    def envelope_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path_prefix}/api/{self.project_id}/envelope/"

    @property
    def otlp_traces_url(self) -> str:
        return (
            f"{self.scheme}://{self.host}{self.path_prefix}"
            f"/api/{self.project_id}/integration/otlp/v1/traces/"
        )

    @property
    def auth_header(self) -> str:
        return f"Sentry sentry_key={self.public_key}"

    @property
    def url(self) -> str:
        """The full DSN, key included: for sentry-sdk only, never for output."""
        return f"{self.scheme}://{self.public_key}@{self.host}{self.path_prefix}/{self.project_id}"

    @property
    def redacted(self) -> str:
        """The DSN without its key, safe to print."""
        return f"{self.scheme}://***@{self.host}{self.path_prefix}/{self.project_id}"

    @classmethod
    def parse(cls, raw: str, setting: str = "sentry_dsn") -> SentryDsn:
        shown = _redact_dsn(raw)
        try:
            parts = urllib.parse.urlsplit(raw)
            port = parts.port
        except ValueError as exc:
            raise _fail(setting, shown, f"not a URL ({exc})", _DSN_FIX) from None
        if parts.scheme not in ("http", "https"):
            raise _fail(setting, shown, "the scheme must be http or https", _DSN_FIX)
        if not parts.username:
            raise _fail(setting, shown, "the DSN has no public key before '@'", _DSN_FIX)
        if not re.fullmatch(r"[A-Za-z0-9._~-]+", parts.username):
            # It goes into the X-Sentry-Auth header of every request.
            reason = "the public key may hold only letters, digits and . _ ~ -"
            raise _fail(setting, shown, reason, _DSN_FIX)
        if not parts.hostname or any(c.isspace() for c in raw):
            raise _fail(setting, shown, "the DSN has no host or contains spaces", _DSN_FIX)
        path = parts.path.rstrip("/")
        prefix, _, project = path.rpartition("/")
        if not project.isdigit():
            raise _fail(setting, shown, "the path must end with a numeric project id", _DSN_FIX)
        # urlsplit drops the brackets of an IPv6 address; without them the port is ambiguous.
        hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host = hostname if port is None else f"{hostname}:{port}"
        return cls(parts.scheme, parts.username, host, project, prefix)


# What an environment and a release look like when Sentry keeps them.
_SENTRY_NAME_EXAMPLES = {
    "environment": "a name such as 'production'",
    "release": "a version such as 'app@1.4.2'",
}


def _sentry_name(
    src: _Source, explicit: Any, field: str, longest: int, reserved: tuple[str, ...]
) -> str | None:
    """`sentry_<field>` (or `SENTRY_<FIELD>`), refused where Sentry would drop the events that
    carry it: the rules of its event normalizer, checked against it in the tests."""
    setting = f"sentry_{field}"
    value, origin = src.pick(explicit, f"SENTRY_{field.upper()}")
    if value is None:
        return None
    example = _SENTRY_NAME_EXAMPLES[field]
    if origin is None:
        _expect(value, setting, _TEXT, "text", f"use {example}")
    problem = None
    if not value.strip():
        problem = "empty"
    elif len(value) > longest:
        problem = f"longer than {longest} characters"
    elif any(c in value for c in "/\\\n\r\t"):
        problem = "Sentry refuses slashes, backslashes, tabs and line breaks in it"
    elif value in reserved:
        problem = f"Sentry refuses {value!r} here"
    if problem:
        fix = f"use {example}, at most {longest} characters, without slashes or tabs"
        raise _fail(origin or setting, value, problem, fix)
    return str(value)


_DSN_FIX = "use the DSN from the Sentry project settings, shaped like http(s)://KEY@HOST/PROJECT_ID"


def redact_endpoint(raw: str) -> str:
    """The endpoint with any `user:password@` replaced by `***@`, for messages and output."""
    return re.sub(r"(//)?[^/@]*@", lambda m: f"{m.group(1) or ''}***@", raw, count=1)


def _redact_dsn(raw: str) -> str:
    # The key in a DSN is a credential: error messages show the rest of the value only. Any
    # run before an '@' is hidden, not only one after '//', since a malformed DSN (no scheme,
    # one slash) still carries the key there.
    return re.sub(r"[^/@]*@", "***@", raw)


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one `configure()` call."""

    service_name: str
    otlp_endpoint: str | None = None
    otlp_protocol: str = "grpc"
    otlp_headers: Mapping[str, str] = field(default_factory=dict)
    sentry_dsn: SentryDsn | None = None
    sentry_mode: str = "envelope"
    sentry_environment: str | None = None
    sentry_release: str | None = None
    constitution_hash: str | None = None
    local_path: Path | None = None
    sample_rate: float = 1.0
    capture_content: bool = False
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay_s: float = 0.5
    export_timeout_s: float = 10.0
    exit_timeout_s: float = 5.0
    prometheus_port: int | None = None
    prometheus_host: str = "127.0.0.1"
    otlp_metrics: bool = False
    # The network sinks run in a process of their own (see `pipeline.offload`).
    export_process: bool = False

    @property
    def sinks(self) -> tuple[str, ...]:
        """Names of the sinks these settings turn on, in fan-out order."""
        names = []
        if self.otlp_endpoint:
            names.append("otlp")
        if self.sentry_dsn:
            names.append("sentry")
        if self.local_path is not None:
            names.append("local_file")
        return tuple(names)


class _Source:
    """Looks a setting up in the explicit arguments first, then in the environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def pick(self, explicit: Any, *names: str) -> tuple[Any, str | None]:
        if explicit is not None:
            return explicit, None
        for name in names:
            value = self.env.get(name)
            if value is not None and value.strip() != "":
                return value.strip(), name
        return None, None


def _parse_bool(value: Any, setting: str, origin: str | None) -> bool:
    """True or False as an argument; from the environment (`origin`), one of the usual words."""
    if origin is None:
        _expect(value, setting, _FLAG, "True or False", "use True or False")
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _fail(setting, value, "not a boolean", "use true or false")


def _parse_float(value: Any, setting: str, low: float, high: float, fix: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise _fail(setting, value, "not a number", fix) from None
    if isinstance(value, bool) or math.isnan(number) or not low <= number <= high:
        raise _fail(setting, value, f"must be between {low} and {high}", fix)
    return number


def _parse_int(value: Any, setting: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise _fail(setting, value, "not a whole number", f"use {low}..{high}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise _fail(setting, value, f"must be between {low} and {high}", f"use {low}..{high}")
    return number


def _parse_pairs(
    value: Any, setting: str, values: tuple[type, ...] = _TEXT, example: str = "k1=v1,k2=v2"
) -> dict[str, str]:
    """`k=v,k2=v2` (URL-encoded, like OTEL_*_HEADERS and OTEL_RESOURCE_ATTRIBUTES) or a mapping.

    A mapping's keys must be text and its values one of `values`; a value is never shown, as a
    header value may be a credential.
    """
    wanted = "text" if values == _TEXT else "text, a number or a boolean"
    fix = f"pass a mapping of names to {wanted}, or text such as {example!r}"
    if isinstance(value, Mapping):
        pairs = {}
        for key, val in value.items():
            if not isinstance(key, str):
                raise ConfigurationError(
                    f"{setting}=(value hidden): the key {key!r:.64} must be text, not "
                    f"{type(key).__name__}. Fix: {fix}"
                )
            if not isinstance(val, values):
                raise ConfigurationError(
                    f"{setting}=(value hidden): the value of {key[:64]!r} must be {wanted}, "
                    f"not {type(val).__name__}. Fix: {fix}"
                )
            pairs[key] = str(val)
    elif not isinstance(value, str):
        raise ConfigurationError(
            f"{setting}=(value hidden): must be a mapping or text, not {type(value).__name__}. "
            f"Fix: {fix}"
        )
    else:
        pairs = {}
        for index, item in enumerate(str(value).split(",")):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                # Only the position is shown: the other items may carry credentials.
                raise ConfigurationError(
                    f"{setting}=(value hidden): item {index + 1} is not key=value. Fix: {fix}"
                )
            pairs[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(val.strip())
    for key, val in pairs.items():
        # A line break would end the header early: the HTTP exporter then refuses every request.
        if any(c in "\r\n\x00" for c in key + val):
            raise ConfigurationError(
                f"{setting}=(value hidden): the item named {key.strip()[:64]!r} contains a "
                "line break or NUL. Fix: remove it from the value"
            )
    return pairs


def _parse_endpoint(value: Any, setting: str) -> str:
    text = str(value)
    shown = redact_endpoint(text)
    fix = "give a URL such as http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318 (HTTP)"
    _expect(value, setting, _TEXT, "text", fix, shown=shown)
    if any(c.isspace() for c in text):
        raise _fail(setting, shown, "the endpoint contains white space", fix)
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _fail(setting, shown, f"not a URL ({exc})", fix) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(
            setting, shown, "the endpoint needs an http:// or https:// scheme and a host", fix
        )
    return text


_RESOURCE_VALUES = (str, bool, int, float)


def _local_path(raw: Any) -> Path:
    """The trace file's path, from text or a path object (bytes are refused: Path takes none)."""
    fix = "name a file such as 'traces.jsonl' (text or a pathlib.Path)"
    _expect(raw, "local_path", (str, os.PathLike), "text or a path", fix)
    try:
        return Path(raw)
    except TypeError:
        # An os.PathLike whose __fspath__ gives bytes or something else.
        raise wrong_type("local_path", raw, "text or a path", fix) from None


def _check_local_path(path: Path) -> None:
    """Refuse a path no write could use, now rather than on every later write."""
    fix = "name a file such as traces.jsonl"
    if "\x00" in str(path):
        raise _fail("local_path", str(path), "contains a NUL byte", fix)
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError) as exc:
        raise _fail("local_path", str(path), f"cannot be used ({exc})", fix) from None
    if is_dir:
        raise _fail("local_path", str(path), "is a directory", fix)
    too_long = any(len(part.encode()) > 255 for part in path.parts)
    if too_long:
        raise _fail("local_path", str(path), "has a name longer than 255 bytes", fix)


def _sampler_rate(src: _Source, explicit: Any) -> float:
    fix_rate = "use a number from 0.0 (keep nothing) to 1.0 (keep every trace)"
    if explicit is not None:
        _expect(explicit, "sample_rate", _NUMBER, "a number", fix_rate)
        return _parse_float(explicit, "sample_rate", 0.0, 1.0, fix_rate)
    rate, name = src.pick(None, "AGENT_TRACE_SAMPLE_RATE")
    if name:
        return _parse_float(rate, name, 0.0, 1.0, fix_rate)
    sampler, _ = src.pick(None, "OTEL_TRACES_SAMPLER")
    arg, arg_name = src.pick(None, "OTEL_TRACES_SAMPLER_ARG")
    if sampler is None:
        return 1.0 if arg is None else _parse_float(arg, "OTEL_TRACES_SAMPLER_ARG", 0, 1, fix_rate)
    sampler = sampler.lower()
    if sampler in ("always_on", "parentbased_always_on"):
        return 1.0
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler in ("traceidratio", "parentbased_traceidratio"):
        if arg is None:
            return 1.0
        return _parse_float(arg, arg_name or "OTEL_TRACES_SAMPLER_ARG", 0.0, 1.0, fix_rate)
    raise _fail(
        "OTEL_TRACES_SAMPLER",
        sampler,
        "agent-trace uses one parent-based ratio sampler so that every sink keeps the same traces",
        "use parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG, always_on or always_off",
    )


def resolve_settings(
    service_name: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    otlp_headers: Mapping[str, str] | str | None = None,
    sentry_dsn: str | None = None,
    sentry_mode: str | None = None,
    sentry_environment: str | None = None,
    sentry_release: str | None = None,
    constitution_hash: str | None = None,
    local_path: str | os.PathLike[str] | None = None,
    local_file: bool | None = None,
    sample_rate: float | None = None,
    capture_content: bool | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
    schedule_delay_s: float | None = None,
    export_timeout_s: float | None = None,
    exit_timeout_s: float | None = None,
    prometheus_port: int | None = None,
    otlp_metrics: bool | None = None,
    export_process: bool | None = None,
) -> Settings:
    """Merge arguments with the environment and validate everything; raise on the first problem."""
    src = _Source(os.environ if env is None else env)

    name, origin = src.pick(service_name, "OTEL_SERVICE_NAME")
    if name is None:
        name = "agent-trace"
    fix = "give the coordinator a name, such as 'coordinator'"
    _expect(name, "service_name", _TEXT, "text", fix)
    if not name.strip():
        raise _fail(origin or "service_name", name, "empty", fix)

    endpoint, origin = src.pick(otlp_endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    signal_specific = origin is not None
    if endpoint is None:
        endpoint, origin = src.pick(None, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint is not None:
        endpoint = _parse_endpoint(endpoint, origin or "otlp_endpoint")

    protocol, origin = src.pick(
        otlp_protocol, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    fix = "use grpc or http (http/protobuf)"
    if origin is None and protocol is not None:
        _expect(protocol, "otlp_protocol", _TEXT, "text", fix)
    protocol = "grpc" if protocol is None else str(protocol).lower()
    if protocol not in _PROTOCOLS:
        raise _fail(
            origin or "otlp_protocol",
            protocol,
            "unknown OTLP protocol (http/json is not supported)",
            fix,
        )
    protocol = _PROTOCOLS[protocol]
    if endpoint and protocol == "http":
        path = urllib.parse.urlsplit(endpoint).path
        from_base_variable = not signal_specific and otlp_endpoint is None
        if from_base_variable or (otlp_endpoint is not None and path in ("", "/")):
            # A base endpoint names the collector; the traces path is appended (OTLP spec). The
            # signal-specific variable is used as given (spec); so is an explicit argument,
            # unless it names no path at all.
            endpoint = endpoint.rstrip("/") + "/v1/traces"

    headers_raw, origin = src.pick(
        otlp_headers, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"
    )
    headers = _parse_pairs(headers_raw, origin or "otlp_headers") if headers_raw is not None else {}

    dsn_raw, origin = src.pick(sentry_dsn, "SENTRY_DSN")
    if origin is None and dsn_raw is not None:
        shown = _redact_dsn(str(dsn_raw))
        _expect(dsn_raw, "sentry_dsn", _TEXT, "text", _DSN_FIX, shown=shown)
    dsn = SentryDsn.parse(dsn_raw, origin or "sentry_dsn") if dsn_raw else None

    mode, origin = src.pick(sentry_mode, "AGENT_TRACE_SENTRY_MODE")
    fix = "use envelope or otlp"
    if origin is None and mode is not None:
        _expect(mode, "sentry_mode", _TEXT, "text", fix)
    mode = "envelope" if mode is None else str(mode).lower()
    if mode not in _SENTRY_MODES:
        raise _fail(origin or "sentry_mode", mode, "unknown Sentry mode", fix)

    chash, origin = src.pick(constitution_hash, "CONSTITUTIONAL_HASH")
    fix = "use the first 16 hex digits of the SHA-256 of the constitution file, as text"
    if origin is None and chash is not None:
        _expect(chash, "constitution_hash", _TEXT, "text", fix)
    if chash is not None:
        chash = str(chash).strip().lower()
        if not _HASH_RE.match(chash):
            raise _fail(origin or "constitution_hash", chash, "not a hex digest", fix)

    want_local, origin = src.pick(local_file, "AGENT_TRACE_LOCAL_FILE")
    path_raw, _ = src.pick(local_path, "AGENT_TRACE_LOCAL_PATH")
    local_on = (
        _parse_bool(want_local, origin or "local_file", origin)
        if want_local is not None
        else (path_raw is not None or (endpoint is None and dsn is None))
    )
    path = _local_path(path_raw) if path_raw is not None else DEFAULT_LOCAL_PATH
    if local_on:
        _check_local_path(path)

    rate = _sampler_rate(src, sample_rate)

    content, origin = src.pick(
        capture_content,
        "AGENT_TRACE_CAPTURE_CONTENT",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    )
    content_on = (
        False if content is None else _parse_bool(content, origin or "capture_content", origin)
    )

    res_raw, origin = src.pick(resource_attributes, "OTEL_RESOURCE_ATTRIBUTES")
    resources = (
        # Resource attribute values may be numbers or booleans (OpenTelemetry allows them).
        _parse_pairs(res_raw, origin or "resource_attributes", _RESOURCE_VALUES, "team=review")
        if res_raw is not None
        else {}
    )

    def number(explicit: Any, env_name: str, default: float, low: float, high: float) -> float:
        value, origin = src.pick(explicit, env_name)
        if value is None:
            return default
        setting = origin or env_name.removeprefix("AGENT_TRACE_").lower()
        fix = f"use a number of seconds from {low} to {high}"
        if origin is None:
            _expect(value, setting, _NUMBER, "a number", fix)
        return _parse_float(value, setting, low, high, fix)

    def whole(explicit: Any, env_name: str, default: int, low: int, high: int) -> int:
        value, origin = src.pick(explicit, env_name)
        if value is None:
            return default
        setting = origin or env_name.removeprefix("AGENT_TRACE_").lower()
        if origin is None:
            _expect(value, setting, _WHOLE, "a whole number", f"use {low}..{high}")
        return _parse_int(value, setting, low, high)

    port_raw, origin = src.pick(prometheus_port, "AGENT_TRACE_PROMETHEUS_PORT")
    if origin is None and port_raw is not None:
        _expect(port_raw, "prometheus_port", _WHOLE, "a whole number", "use 0..65535")
    port = None if port_raw is None else _parse_int(port_raw, origin or "prometheus_port", 0, 65535)

    metrics_raw, origin = src.pick(otlp_metrics, "OTEL_METRICS_EXPORTER")
    if origin is None and metrics_raw is not None:
        # The argument turns OTLP metrics on or off; the variable names exporters.
        _expect(metrics_raw, "otlp_metrics", _FLAG, "True or False", "use True or False")
    if isinstance(metrics_raw, str):
        exporters = {part.strip().lower() for part in metrics_raw.split(",") if part.strip()}
        unknown = exporters - {"otlp", "prometheus", "none"}
        if unknown:
            raise _fail(
                origin or "otlp_metrics",
                metrics_raw,
                "unknown metrics exporter",
                "use otlp, prometheus or none (prometheus also needs AGENT_TRACE_PROMETHEUS_PORT)",
            )
        metrics_on = "otlp" in exporters
    else:
        metrics_on = bool(metrics_raw)
    if metrics_on and not endpoint:
        raise _fail(
            origin or "otlp_metrics",
            metrics_raw,
            "metrics over OTLP need an endpoint",
            "set OTEL_EXPORTER_OTLP_ENDPOINT, or turn OTLP metrics off",
        )

    queue = whole(max_queue_size, "AGENT_TRACE_MAX_QUEUE_SIZE", 2048, 1, 1_000_000)
    batch = whole(max_export_batch_size, "AGENT_TRACE_MAX_EXPORT_BATCH_SIZE", 512, 1, 100_000)
    if batch > queue:
        raise _fail(
            "max_export_batch_size", batch, f"larger than max_queue_size={queue}", "lower it"
        )

    offload, origin = src.pick(export_process, "AGENT_TRACE_EXPORT_PROCESS")
    offload_on = (
        _parse_bool(offload, origin or "export_process", origin) if offload is not None else True
    )

    env_name = _sentry_name(src, sentry_environment, "environment", 64, ("None", ".", ".."))
    release = _sentry_name(src, sentry_release, "release", 200, (".", "..", "latest"))
    return Settings(
        service_name=name.strip(),
        otlp_endpoint=endpoint,
        otlp_protocol=protocol,
        otlp_headers=headers,
        sentry_dsn=dsn,
        sentry_mode=mode,
        sentry_environment=env_name,
        sentry_release=release,
        constitution_hash=chash,
        local_path=path if local_on else None,
        sample_rate=rate,
        capture_content=content_on,
        resource_attributes=resources,
        max_queue_size=queue,
        max_export_batch_size=batch,
        schedule_delay_s=number(schedule_delay_s, "AGENT_TRACE_SCHEDULE_DELAY_S", 0.5, 0.001, 60),
        export_timeout_s=number(export_timeout_s, "AGENT_TRACE_EXPORT_TIMEOUT_S", 10.0, 0.1, 300),
        exit_timeout_s=number(exit_timeout_s, "AGENT_TRACE_EXIT_TIMEOUT_S", 5.0, 0.0, 300),
        prometheus_port=port,
        otlp_metrics=metrics_on,
        # Only network sinks go there: a local file alone stays in this process.
        export_process=offload_on and (endpoint is not None or dsn is not None),
    )
