"""`agent-trace replay FILE`: send a recorded trace file to the configured OTLP and Sentry sinks."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agent_trace import _runtime
from agent_trace._attributes import to_attributes
from agent_trace._config import ConfigurationError, resolve_settings
from agent_trace.cli._common import add_sink_options, config_error, describe_sinks, sink_kwargs
from agent_trace.tracefile import SpanRecord, TraceFileError, iter_spans

_KINDS = {
    1: SpanKind.INTERNAL,
    2: SpanKind.SERVER,
    3: SpanKind.CLIENT,
    4: SpanKind.PRODUCER,
    5: SpanKind.CONSUMER,
}
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}
_SCOPE = InstrumentationScope("agent_trace.replay")


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "replay",
        help="send a recorded trace file to the configured OTLP and Sentry sinks",
        description="Read a trace file (OTLP JSON lines) and export its spans, ids unchanged, "
        "to the OTLP endpoint and/or Sentry DSN given here or in the environment. Malformed "
        "lines are reported with their line number and skipped (--strict refuses the file).",
    )
    parser.add_argument("file", type=Path, help="trace file, e.g. .agent-trace/traces.jsonl")
    parser.add_argument("--strict", action="store_true", help="stop at the first malformed line")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sink_options(parser)


def to_readable(record: SpanRecord, resources: dict[int, Resource]) -> ReadableSpan:
    """Rebuild an SDK span from a file record, keeping its ids, times and status."""
    resource = resources.get(id(record.resource))
    if resource is None:
        resource = Resource(to_attributes(dict(record.resource)))
        resources[id(record.resource)] = resource
    context = SpanContext(
        int(record.trace_id, 16),
        int(record.span_id, 16),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    parent = None
    if record.parent_span_id:
        parent = SpanContext(
            int(record.trace_id, 16),
            int(record.parent_span_id, 16),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    return ReadableSpan(
        name=record.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=to_attributes(record.attributes),
        events=[Event(e.name, to_attributes(e.attributes), e.time_ns) for e in record.events],
        kind=_KINDS.get(record.kind, SpanKind.INTERNAL),
        status=Status(
            _STATUS.get(record.status_code, StatusCode.UNSET), record.status_message or None
        ),
        start_time=record.start_ns,
        end_time=record.end_ns,
        instrumentation_scope=_SCOPE,
    )


def _progress(done: int, started: float, enabled: bool) -> None:
    if not enabled:
        return
    rate = done / max(time.monotonic() - started, 1e-6)
    bar = "#" * min(30, done // 500 % 31)
    print(f"\r[{bar:<30}] {done} spans ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        settings = resolve_settings(args.service_name, local_file=False, **sink_kwargs(args))
    except ConfigurationError as exc:
        return config_error(exc)
    if not settings.sinks:
        print(
            "agent-trace replay: no sink configured; give --otlp-endpoint or --sentry-dsn "
            "(or OTEL_EXPORTER_OTLP_ENDPOINT / SENTRY_DSN)",
            file=sys.stderr,
        )
        return 2
    try:
        stream = iter_spans(args.file, strict=args.strict)
    except TraceFileError as exc:
        print(f"agent-trace replay: {exc}", file=sys.stderr)
        return 2

    pipeline = _runtime.Pipeline(settings)
    show = not args.no_progress and sys.stderr.isatty()
    resources: dict[int, Resource] = {}
    started = time.monotonic()
    count = 0
    try:
        with stream:
            for record in stream:
                _wait_for_room(pipeline)
                pipeline.processor.on_end(to_readable(record, resources))
                count += 1
                if count % 500 == 0:
                    _progress(count, started, show)
    except TraceFileError as exc:
        print(f"\nagent-trace replay: {exc}; nothing after it was sent", file=sys.stderr)
        pipeline.shutdown(args.timeout)
        return 2
    _progress(count, started, show)
    delivered = pipeline.shutdown(args.timeout)
    if show:
        print(file=sys.stderr)
    skipped = stream.stats.skipped_lines
    print(f"replayed {count} spans from {args.file} to: " + "; ".join(describe_sinks(settings)))
    if skipped:
        print(f"skipped {skipped} malformed lines (see the warnings above)")
    drops = _runtime.drops().snapshot()
    if not delivered or drops:
        print(f"not every span was delivered: {drops or 'timed out'}", file=sys.stderr)
        return 1
    return 0


def _wait_for_room(pipeline: _runtime.Pipeline) -> None:
    # A replay may wait for the sinks (unlike a traced application): never overflow a queue.
    limit = pipeline.settings.max_queue_size - pipeline.settings.max_export_batch_size
    while any(w.queued >= limit for w in pipeline.workers):
        time.sleep(0.005)
