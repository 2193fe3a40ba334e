"""The sinks a configuration turns on, built the same way in the application and in its export
process (`pipeline.offload`)."""

from __future__ import annotations

from collections.abc import Sequence

from agent_trace._config import Settings
from agent_trace.pipeline.drops import DropCounter
from agent_trace.pipeline.worker import SinkWorker, SpanSink

__all__ = ["remote_sinks", "workers_for"]


def workers_for(
    sinks: Sequence[SpanSink], settings: Settings, drops: DropCounter, *, pace: bool = True
) -> list[SinkWorker]:
    """A queue and export thread for each sink, sized by the settings."""
    return [
        SinkWorker(
            sink,
            drops,
            max_queue_size=settings.max_queue_size,
            max_batch_size=settings.max_export_batch_size,
            schedule_delay_s=settings.schedule_delay_s,
            pace=pace,
        )
        for sink in sinks
    ]


def remote_sinks(settings: Settings, drops: DropCounter) -> list[SpanSink]:
    """The sinks that send spans over the network: OTLP, then Sentry."""
    from agent_trace.pipeline.sinks.otlp import OtlpSink

    sinks: list[SpanSink] = []
    if settings.otlp_endpoint:
        sinks.append(
            OtlpSink(
                "otlp",
                settings.otlp_endpoint,
                protocol=settings.otlp_protocol,
                headers=settings.otlp_headers,
                timeout_s=settings.export_timeout_s,
            )
        )
    dsn = settings.sentry_dsn
    if dsn is not None:
        if settings.sentry_mode == "otlp":
            sinks.append(
                OtlpSink(
                    "sentry",
                    dsn.otlp_traces_url,
                    protocol="http",
                    headers={"X-Sentry-Auth": dsn.auth_header},
                    timeout_s=settings.export_timeout_s,
                )
            )
        else:
            from agent_trace.pipeline.sinks.sentry_envelope import SentryEnvelopeSink

            sinks.append(
                SentryEnvelopeSink(
                    dsn,
                    drops,
                    environment=settings.sentry_environment,
                    release=settings.sentry_release,
                    timeout_s=settings.export_timeout_s,
                )
            )
    return sinks
