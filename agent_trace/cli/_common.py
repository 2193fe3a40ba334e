"""Helpers the commands share: the sink options, how to describe where spans went, and how
to print text read from a trace file."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from agent_trace._config import ConfigurationError, Settings, redact_endpoint


def add_sink_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "sinks (default: the same environment variables as agent_trace.configure)"
    )
    group.add_argument("--otlp-endpoint", help="OTLP endpoint, e.g. http://127.0.0.1:4317")
    group.add_argument("--otlp-protocol", choices=["grpc", "http"], help="OTLP protocol")
    group.add_argument("--sentry-dsn", help="Sentry DSN (its key is never printed)")
    group.add_argument("--sentry-mode", choices=["envelope", "otlp"], help="how spans reach Sentry")
    group.add_argument("--service-name", help="service name for the spans")


def sink_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "otlp_endpoint": args.otlp_endpoint,
        "otlp_protocol": args.otlp_protocol,
        "sentry_dsn": args.sentry_dsn,
        "sentry_mode": args.sentry_mode,
    }


def describe_sinks(settings: Settings) -> list[str]:
    """One line per active sink, with no secret in it."""
    lines = []
    if settings.otlp_endpoint:
        lines.append(f"otlp ({settings.otlp_protocol}): {redact_endpoint(settings.otlp_endpoint)}")
    if settings.sentry_dsn is not None:
        lines.append(f"sentry ({settings.sentry_mode}): {settings.sentry_dsn.redacted}")
    if settings.local_path is not None:
        lines.append(f"local file: {settings.local_path}")
    return lines


def config_error(exc: ConfigurationError) -> int:
    print(f"agent-trace: configuration error: {exc}", file=sys.stderr)
    return 2


# C0 and C1 controls (ESC starts terminal sequences; C1 CSI 0x9b does on some terminals), the
# bidirectional overrides that reorder what a reader sees, and lone surrogates, which no
# encoding can write.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` safe to write to a terminal: unprintable characters become Python escapes.

    Span names, attributes and paths come from files anyone can write; printed raw, an ESC
    sequence would retitle or clear the terminal and a lone surrogate would stop the command
    with `UnicodeEncodeError`. Backslashes are left alone, so the escapes read as in `repr`.

    Example:
        >>> print(printable("vote\\x1b[2J"))
        vote\\x1b[2J
    """
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def tolerate_unencodable(*streams: Any) -> None:
    """Make text streams write what their encoding cannot hold as backslash escapes.

    A terminal in Latin-1 or ASCII would otherwise turn an agent's name into a traceback.
    """
    for stream in streams:
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
