"""The kit for testing coordinators traced with agent-trace (and agent-trace's own tests).

`capture_spans()` configures agent-trace with an in-memory sink that sees exactly what the
real sinks would (sampled, scrubbed), synchronously; the pytest fixture `agent_trace_spans`
wraps it. `CapturedSpans` answers questions about the span tree.

Example:
    >>> def test_review(agent_trace_spans):
    ...     run_my_coordinator()
    ...     session = agent_trace_spans.one("invoke_workflow governance_review")
    ...     assert [t.name for t in agent_trace_spans.children(session)] == ["invoke_agent ethics"]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan

from agent_trace import _api
from agent_trace._attributes import CONVERSATION_ID
from agent_trace.pipeline.sinks.memory import MemorySink

__all__ = ["CapturedSpans", "agent_trace_spans", "capture_spans"]


class CapturedSpans:
    """Finished spans captured in memory, with span-tree helpers."""

    def __init__(self, sink: MemorySink, metric_reader: InMemoryMetricReader) -> None:
        self._sink = sink
        self._metric_reader = metric_reader

    @property
    def spans(self) -> list[ReadableSpan]:
        """Every captured span, in the order they ended."""
        return self._sink.spans

    def clear(self) -> None:
        self._sink.clear()

    def find(
        self, name: str | None = None, *, prefix: str | None = None, **attributes: Any
    ) -> list[ReadableSpan]:
        """Spans matching an exact name, a name prefix and attribute values.

        Attribute keys use `__` for dots: `find(gen_ai__agent__name="ethics")`.
        """
        wanted = {k.replace("__", "."): v for k, v in attributes.items()}
        found = []
        for span in self.spans:
            if name is not None and span.name != name:
                continue
            if prefix is not None and not span.name.startswith(prefix):
                continue
            attrs = span.attributes or {}
            if all(_equal(attrs.get(k), v) for k, v in wanted.items()):
                found.append(span)
        return found

    def one(
        self, name: str | None = None, *, prefix: str | None = None, **attributes: Any
    ) -> ReadableSpan:
        """The only span matching; fails the test with the candidates listed otherwise."""
        found = self.find(name, prefix=prefix, **attributes)
        if len(found) != 1:
            names = sorted(s.name for s in self.spans)
            raise AssertionError(
                f"expected one span matching {name or prefix!r} {attributes}, found "
                f"{len(found)}; captured: {names}"
            )
        return found[0]

    def sessions(self) -> list[ReadableSpan]:
        return self.find(prefix="invoke_workflow ")

    def session(self, session_id: str) -> ReadableSpan:
        return self.one(
            prefix="invoke_workflow ", **{CONVERSATION_ID.replace(".", "__"): session_id}
        )

    def by_id(self, span_id: int) -> ReadableSpan | None:
        for span in self.spans:
            if span.context is not None and span.context.span_id == span_id:
                return span
        return None

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        return None if span.parent is None else self.by_id(span.parent.span_id)

    def children(self, span: ReadableSpan, *, prefix: str | None = None) -> list[ReadableSpan]:
        """Direct children of `span`, ordered by start time."""
        assert span.context is not None
        kids = [
            s
            for s in self.spans
            if s.parent is not None
            and s.parent.span_id == span.context.span_id
            and s.context is not None
            and s.context.trace_id == span.context.trace_id
            and (prefix is None or s.name.startswith(prefix))
        ]
        return sorted(kids, key=lambda s: s.start_time or 0)

    def descendants(self, span: ReadableSpan) -> list[ReadableSpan]:
        out: list[ReadableSpan] = []
        stack = [span]
        while stack:
            for child in self.children(stack.pop()):
                out.append(child)
                stack.append(child)
        return out

    def turns(self, session: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.descendants(session) if s.name.startswith("invoke_agent ")]

    def rounds(self, session: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.descendants(session) if s.name.startswith("consensus_round ")]

    def votes(self, round_span: ReadableSpan) -> list[ReadableSpan]:
        return self.children(round_span, prefix="vote ")

    def assert_no_orphans(self) -> None:
        """Every span's local parent was captured too."""
        ids = {s.context.span_id for s in self.spans if s.context is not None}
        orphans = [
            s.name
            for s in self.spans
            if s.parent is not None and not s.parent.is_remote and s.parent.span_id not in ids
        ]
        assert not orphans, f"spans whose parent was never captured: {orphans}"

    def tree(self, root: ReadableSpan, indent: str = "  ") -> str:
        """The subtree under `root` as indented names, for readable assertion messages."""
        lines: list[str] = []

        def walk(span: ReadableSpan, depth: int) -> None:
            lines.append(f"{indent * depth}{span.name}")
            for child in self.children(span):
                walk(child, depth + 1)

        walk(root, 0)
        return "\n".join(lines)

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric points so far: name -> [(attributes, value or histogram count)]."""
        data = self._metric_reader.get_metrics_data()
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        if data is None:
            return out
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points = out.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = getattr(point, "count", None)
                        points.append((dict(point.attributes or {}), value))
        return out


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, tuple) and isinstance(expected, list):
        return list(actual) == expected
    return bool(actual == expected)


@contextmanager
def capture_spans(
    service_name: str = "agent-trace-test", **configure_kwargs: Any
) -> Iterator[CapturedSpans]:
    """Configure agent-trace to capture spans in memory for the duration of the block.

    The environment is not read (a test must not send to whatever `OTEL_*` or `SENTRY_DSN`
    point at); other sinks are off unless `configure_kwargs` turns them on.
    """
    sink = MemorySink()
    reader = InMemoryMetricReader()
    configure_kwargs.setdefault("local_file", False)
    configure_kwargs.setdefault("_env", {})
    # Sinks and readers a test adds come beside the kit's own, not instead of them.
    sinks = [sink, *configure_kwargs.pop("_extra_sinks", ())]
    readers = [reader, *configure_kwargs.pop("_metric_readers", ())]
    _api.configure(service_name, _extra_sinks=sinks, _metric_readers=readers, **configure_kwargs)
    try:
        yield CapturedSpans(sink, reader)
    finally:
        _api.shutdown(timeout_s=5.0)


try:
    import pytest
except ImportError:  # pragma: no cover - the kit works without pytest, the fixture needs it
    pass
else:

    @pytest.fixture
    def agent_trace_spans() -> Iterator[CapturedSpans]:
        """Capture agent-trace spans in memory for one test (registered as a pytest plugin)."""
        with capture_spans() as captured:
            yield captured
