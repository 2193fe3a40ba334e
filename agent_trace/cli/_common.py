"""Helpers the commands share: the sink options and how to describe where spans went."""

from __future__ import annotations

import argparse
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
