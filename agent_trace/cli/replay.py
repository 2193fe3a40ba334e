"""`agent-trace replay FILE`: send a recorded trace file to the configured OTLP and Sentry sinks.

A span the reader accepted can still be one OTLP cannot carry. Such spans are skipped one by
one and counted by reason, never handed to a sink, where they would fail the whole batch they
travel in (`--strict` stops at the first instead). Text holding lone surrogates (JSON can
carry them as `\\udXXX` escapes; no UTF-8 encoder takes them) is sent with U+FFFD in their
place, and the spans so mended are counted.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agent_trace import _runtime
from agent_trace._attributes import to_attributes
from agent_trace._config import ConfigurationError, resolve_settings
from agent_trace.cli._common import (
    add_sink_options,
    config_error,
    describe_sinks,
    printable,
    sink_kwargs,
)
from agent_trace.tracefile import SpanEvent, SpanRecord, TraceFileError, iter_spans

_KINDS = {
    1: SpanKind.INTERNAL,
    2: SpanKind.SERVER,
    3: SpanKind.CLIENT,
    4: SpanKind.PRODUCER,
    5: SpanKind.CONSUMER,
}
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}
_SCOPE = InstrumentationScope("agent_trace.replay")
_TIME_LIMIT = 2**64  # OTLP times are fixed64 nanoseconds
_SURROGATE = re.compile(r"[\ud800-\udfff]")


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


def unsendable(record: SpanRecord) -> str | None:
    """Why OTLP cannot carry `record` as it is, or None when it can."""
    times = (record.start_ns, record.end_ns, *(event.time_ns for event in record.events))
    if not all(0 <= t < _TIME_LIMIT for t in times):
        return "a time outside OTLP's 64-bit range"
    return None


def mend_text(record: SpanRecord) -> SpanRecord:
    """`record` with lone surrogates in its text replaced by U+FFFD (itself if it has none).

    Lone surrogates survive JSON (as `\\udXXX` escapes) but no UTF-8 encoder takes them: the
    OTLP exporter would fail the batch. The resource is mended separately, once per mapping.
    """
    if not _has_surrogate((record.name, record.status_message, record.attributes, record.events)):
        return record
    return record._replace(
        name=_mend(record.name),
        status_message=_mend(record.status_message),
        attributes=_mend(record.attributes),
        events=tuple(
            SpanEvent(_mend(e.name), e.time_ns, _mend(e.attributes)) for e in record.events
        ),
    )


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_surrogate(v) for v in value)
    return False


def _mend(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_mend(k): _mend(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mend(v) for v in value]
    return value


class _Rebuilder:
    """Turns records into SDK spans and counts the ones it cannot send, by reason.

    Records of one line share their resource mapping, so a resource is built once per mapping.
    """

    def __init__(self) -> None:
        self.unsent: Counter[str] = Counter()
        self.mended = 0
        # The mapping itself is held, not its id(): a freed mapping's id can come back.
        self._mapping: Mapping[str, Any] | None = None
        self._resource = Resource.get_empty()
        self._resource_mended = False

    def span(self, record: SpanRecord) -> ReadableSpan | str:
        """The SDK span of `record`, or why it cannot be sent."""
        reason = unsendable(record)
        if reason is not None:
            return reason
        try:
            if record.resource is not self._mapping:
                mend = _has_surrogate(record.resource)
                attributes = _mend(dict(record.resource)) if mend else dict(record.resource)
                self._resource = Resource(to_attributes(attributes))
                self._mapping, self._resource_mended = record.resource, mend
            mended = mend_text(record)
            readable = to_readable(mended, self._resource)
        except Exception as exc:
            # Nothing the reader accepts should get here; if it does, one span is lost, not
            # the replay.
            return f"not rebuilt as an SDK span ({type(exc).__name__})"
        if mended is not record or self._resource_mended:
            self.mended += 1
        return readable


def to_readable(record: SpanRecord, resource: Resource) -> ReadableSpan:
    """Rebuild an SDK span from a file record, keeping its ids, times and status."""
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
        # In this process: a replay waits for the sinks' queues (`_wait_for_room`), which it
        # cannot see in an export process.
        settings = resolve_settings(
            args.service_name, local_file=False, export_process=False, **sink_kwargs(args)
        )
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
        _error(f"agent-trace replay: {exc}")
        return 2

    pipeline = _runtime.Pipeline(settings)
    show = not args.no_progress and sys.stderr.isatty()
    rebuilder = _Rebuilder()
    started = time.monotonic()
    count = 0
    try:
        with stream:
            for record in stream:
                span = rebuilder.span(record)
                if isinstance(span, str):
                    if args.strict:
                        raise TraceFileError(
                            args.file, f"span {record.span_id}: {span}", record.line
                        )
                    rebuilder.unsent[span] += 1
                    continue
                _wait_for_room(pipeline)
                pipeline.processor.on_end(span)
                count += 1
                if count % 500 == 0:
                    _progress(count, started, show)
    except TraceFileError as exc:
        if show:
            print(file=sys.stderr)  # off the progress bar's line
        _error(f"agent-trace replay: {exc}; nothing after it was sent")
        pipeline.shutdown(args.timeout)
        return 2
    _progress(count, started, show)
    delivered = pipeline.shutdown(args.timeout)
    if show:
        print(file=sys.stderr)
    skipped = stream.stats.skipped_lines
    sinks = "; ".join(describe_sinks(settings))
    print(printable(f"replayed {count} spans from {args.file} to: {sinks}"))
    if skipped:
        print(f"skipped {skipped} malformed lines (see the warnings above)")
    if rebuilder.unsent:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in rebuilder.unsent.most_common())
        print(f"skipped {rebuilder.unsent.total()} spans OTLP cannot carry ({reasons})")
    if rebuilder.mended:
        print(f"sent {rebuilder.mended} spans with U+FFFD for lone surrogates in their text")
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


def _error(message: str) -> None:
    print(printable(message), file=sys.stderr)
