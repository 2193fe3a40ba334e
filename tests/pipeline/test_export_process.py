"""The network sinks in a process of their own (`agent_trace.pipeline.offload`).

Spans go through the pipe intact, the export process's drops and errors are counted in the
application's process, and when the export process cannot start or dies, tracing goes on in
the application's process with the loss counted.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

import agent_trace
from agent_trace import _runtime
from agent_trace.pipeline.offload import parent as offload_parent
from agent_trace.pipeline.offload.parent import EXPORT_PROCESS_EXITED, ExportProcessSink
from agent_trace.pipeline.offload.wire import (
    FrameReader,
    SpanDecoder,
    SpanEncoder,
    encode_spans,
    frame,
)
from tests.backends.otlp_recorder import OtlpGrpcRecorder, attributes_of, closed_port

ROOT = Path(__file__).resolve().parents[2]
RESOURCE = Resource({"service.name": "offload-test", "team": "review"})


@pytest.fixture(autouse=True)
def _shut_down() -> Iterator[None]:
    yield
    agent_trace.shutdown(timeout_s=5)


def _context(trace_id: int, span_id: int, *, remote: bool = False, state: bool = False) -> Any:
    return SpanContext(
        trace_id,
        span_id,
        is_remote=remote,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("other", "x=y")]) if state else None,
    )


def _full_span() -> ReadableSpan:
    attributes = BoundedAttributes(
        maxlen=4,
        attributes={
            "agent_trace.agent": "ethics",
            "count": 3,
            "ratio": 0.5,
            "ok": True,
            "agents": ("ethics", "legal"),
            "blob": b"\x00\xff",
            "dropped-one": 1,
        },
        immutable=True,
    )
    events = BoundedList.from_seq(1, [Event("vote", {"choice": "yes"}, 11), Event("late", {}, 12)])
    links = (Link(_context(7, 8, remote=True, state=True), {"why": "handoff"}),)
    return ReadableSpan(
        "consensus round",
        context=_context(0xABC, 0x12),
        parent=_context(0xABC, 0x11, remote=True, state=True),
        resource=RESOURCE,
        attributes=attributes,
        events=events,
        links=links,
        kind=SpanKind.CONSUMER,
        status=Status(StatusCode.ERROR, "deadlock"),
        start_time=10,
        end_time=20,
        instrumentation_scope=InstrumentationScope("agent_trace", "1.2", "https://schema"),
    )


def _fields(span: ReadableSpan) -> tuple[Any, ...]:
    def ctx(c: SpanContext | None) -> Any:
        if c is None:
            return None
        return (c.trace_id, c.span_id, int(c.trace_flags), c.is_remote, list(c.trace_state.items()))

    return (
        span.name,
        ctx(span.context),
        ctx(span.parent),
        span.kind,
        span.start_time,
        span.end_time,
        span.status.status_code,
        span.status.description,
        dict(span.attributes or {}),
        span.dropped_attributes,
        [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
        span.dropped_events,
        [(ctx(link.context), dict(link.attributes or {})) for link in span.links],
        span.dropped_links,
        span.instrumentation_scope,
        dict(span.resource.attributes),
        span.resource.schema_url,
    )


def _round_trip(spans: list[ReadableSpan], resource: Resource = RESOURCE) -> list[ReadableSpan]:
    data, lost = encode_spans(SpanEncoder(resource), spans)
    assert lost == 0
    import io

    message = FrameReader(io.BytesIO(data)).next()
    assert message is not None and message[0] == "spans"
    return [SpanDecoder(resource).span(raw) for raw in message[1]]


# -- the wire ---------------------------------------------------------------------------------


def test_every_field_of_a_span_survives_the_pipe() -> None:
    original = _full_span()
    (copy,) = _round_trip([original])
    assert _fields(copy) == _fields(original)
    assert copy.dropped_attributes == 3 and copy.dropped_events == 1


def test_a_span_of_another_resource_keeps_its_own() -> None:
    other = Resource({"service.name": "elsewhere"}, "https://other")
    span = ReadableSpan("x", context=_context(1, 2), resource=other, start_time=1, end_time=2)
    (copy,) = _round_trip([span])
    assert dict(copy.resource.attributes) == {"service.name": "elsewhere"}
    assert copy.resource.schema_url == "https://other"
    assert copy.parent is None and copy.kind is SpanKind.INTERNAL


def test_a_value_marshal_refuses_is_sent_as_its_text() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque-value"

    span = ReadableSpan(
        "x",
        context=_context(1, 2),
        resource=RESOURCE,
        attributes={"odd": Opaque(), "list": [Opaque(), 1], "fine": "yes"},
        start_time=1,
        end_time=2,
    )
    (copy,) = _round_trip([span])
    assert dict(copy.attributes or {}) == {
        "odd": "opaque-value",
        "list": ("opaque-value", 1),
        "fine": "yes",
    }


def test_a_broken_frame_is_refused() -> None:
    import io
    import struct

    with pytest.raises(ValueError, match="broken"):
        FrameReader(io.BytesIO(struct.pack("<I", 2**31))).next()
    assert FrameReader(io.BytesIO(frame(("spans", []))[:-1])).next() is None


# -- the export process -------------------------------------------------------------------------


def _configure(recorder: OtlpGrpcRecorder, **kwargs: Any) -> ExportProcessSink:
    agent_trace.configure("offload-test", otlp_endpoint=recorder.endpoint, _env={}, **kwargs)
    pipeline = _runtime.current()
    assert pipeline is not None
    (sink,) = [w.sink for w in pipeline.workers if isinstance(w.sink, ExportProcessSink)]
    return sink


def _started(sink: ExportProcessSink) -> int:
    assert sink.started(20)
    assert sink.pid and sink.pid != os.getpid()
    return sink.pid


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _session(name: str) -> str:
    with agent_trace.session(name, agents=["ethics"]) as session, session.turn("ethics"):
        pass
    return session.trace_id


def test_spans_reach_otlp_through_another_process(otlp_grpc_recorder: OtlpGrpcRecorder) -> None:
    sink = _configure(otlp_grpc_recorder)
    trace_id = _session("review")
    assert agent_trace.force_flush(timeout_s=10)
    assert psutil.Process(_started(sink)).ppid() == os.getpid()
    spans = otlp_grpc_recorder.spans()
    assert {s.trace_id.hex() for s in spans} == {trace_id}
    turn = next(s for s in spans if attributes_of(s).get("gen_ai.agent.name") == "ethics")
    assert turn.parent_span_id  # nested under the session, across the pipe
    resource = otlp_grpc_recorder.calls[0].request.resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == (
        "offload-test"
    )
    assert agent_trace.sink_status() == {"otlp": "ok"}


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's idle scheduling class")
def test_the_export_process_runs_only_on_cores_nothing_else_wants(
    otlp_grpc_recorder: OtlpGrpcRecorder,
) -> None:
    sink = _configure(otlp_grpc_recorder)
    assert os.sched_getscheduler(_started(sink)) == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE


def test_no_export_process_when_turned_off(otlp_grpc_recorder: OtlpGrpcRecorder) -> None:
    before = {p.pid for p in psutil.Process().children()}
    agent_trace.configure(
        "offload-test", otlp_endpoint=otlp_grpc_recorder.endpoint, export_process=False, _env={}
    )
    pipeline = _runtime.current()
    assert pipeline is not None
    assert [w.sink.name for w in pipeline.workers] == ["otlp"]
    assert {p.pid for p in psutil.Process().children()} <= before
    _session("inline")
    assert agent_trace.force_flush(timeout_s=10)
    assert len(otlp_grpc_recorder.spans()) == 2


def test_the_setting_is_checked() -> None:
    with pytest.raises(agent_trace.ConfigurationError, match="AGENT_TRACE_EXPORT_PROCESS"):
        agent_trace.configure(
            "x",
            otlp_endpoint="http://127.0.0.1:4317",
            _env={"AGENT_TRACE_EXPORT_PROCESS": "sometimes"},
        )
    with pytest.raises(agent_trace.ConfigurationError, match="export_process"):
        agent_trace.configure("x", otlp_endpoint="http://127.0.0.1:4317", export_process="yes")  # type: ignore[arg-type]
    # A local file alone has nothing to send over the network: no export process.
    settings = agent_trace.configure("x", local_file=True, local_path=os.devnull, _env={})
    assert settings.export_process is False


def test_the_export_process_drops_are_counted_here() -> None:
    agent_trace.configure(
        "offload-test",
        otlp_endpoint=f"http://127.0.0.1:{closed_port()}",
        export_timeout_s=1,
        _env={},
    )
    before = agent_trace.dropped_spans().get(("otlp", "export_failed"), 0)
    _session("refused")
    assert agent_trace.force_flush(timeout_s=10) is False
    assert agent_trace.dropped_spans()[("otlp", "export_failed")] - before == 2
    assert agent_trace.sink_status()["otlp"].startswith("failing: ")


def test_a_dead_export_process_is_replaced_by_in_process_sinks(
    otlp_grpc_recorder: OtlpGrpcRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    sink = _configure(otlp_grpc_recorder)
    # The counts are the process's since it started: an export process another test left
    # behind may have counted its own losses already.
    exited_before = agent_trace.dropped_spans().get(("otlp", EXPORT_PROCESS_EXITED), 0)
    first = _session("before")
    assert agent_trace.force_flush(timeout_s=10)
    os.kill(_started(sink), signal.SIGKILL)
    # The application's process learns it from its pipe (and reaps it).
    _wait_until(lambda: sink.exit_code is not None)
    assert sink.exit_code == -signal.SIGKILL
    with caplog.at_level(logging.WARNING, logger="agent_trace"):
        second = _session("after")
        assert agent_trace.force_flush(timeout_s=10)
        third = _session("later")
        assert agent_trace.force_flush(timeout_s=10)
    traces = {s.trace_id.hex() for s in otlp_grpc_recorder.spans()}
    assert {first, second, third} <= traces
    warnings = [r for r in caplog.records if "export process" in r.getMessage()]
    assert len(warnings) == 1 and "exited with code -9" in warnings[0].getMessage()
    assert sink.process_exits == 1
    # Nothing was held when it died: nothing counted as lost.
    assert agent_trace.dropped_spans().get(("otlp", EXPORT_PROCESS_EXITED), 0) == exited_before


def test_spans_the_dead_process_held_are_counted(otlp_grpc_recorder: OtlpGrpcRecorder) -> None:
    otlp_grpc_recorder.hang()
    sink = _configure(otlp_grpc_recorder, export_timeout_s=30)
    before = agent_trace.dropped_spans().get(("otlp", EXPORT_PROCESS_EXITED), 0)
    _session("stuck")
    # The export process holds the two spans (its export call hangs); let it report so.
    assert agent_trace.force_flush(timeout_s=1) is False
    os.kill(_started(sink), signal.SIGKILL)
    _wait_until(lambda: sink.process_exits == 1)
    assert agent_trace.dropped_spans().get(("otlp", EXPORT_PROCESS_EXITED), 0) - before == 2


def test_an_export_process_that_cannot_start_leaves_tracing_in_process(
    otlp_grpc_recorder: OtlpGrpcRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offload_parent.sys, "executable", "/nonexistent/python")
    before = {p.pid for p in psutil.Process().children()}
    _configure(otlp_grpc_recorder)
    trace_id = _session("fallback")
    assert agent_trace.force_flush(timeout_s=10)
    assert {s.trace_id.hex() for s in otlp_grpc_recorder.spans()} == {trace_id}
    assert {p.pid for p in psutil.Process().children()} <= before


def test_shutdown_ends_the_export_process(otlp_grpc_recorder: OtlpGrpcRecorder) -> None:
    sink = _configure(otlp_grpc_recorder)
    _session("bye")
    _started(sink)
    assert agent_trace.shutdown(timeout_s=10)
    _wait_until(lambda: sink.exit_code is not None)
    assert sink.exit_code == 0 and sink.process_exits == 0
    assert len(otlp_grpc_recorder.spans()) == 2


def _script(body: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import os, sys
        import agent_trace
        agent_trace.configure("script", otlp_endpoint={endpoint!r}, _env={{}})
        """
    ) + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


def test_spans_of_a_process_that_dies_abruptly_are_still_sent(
    otlp_grpc_recorder: OtlpGrpcRecorder,
) -> None:
    # No shutdown, no atexit: the export process sees its pipe close and sends what it has.
    result = _script(
        """
        with agent_trace.session("abrupt", agents=["a"]) as s, s.turn("a"):
            pass
        agent_trace.force_flush(timeout_s=0.001)  # hands the spans over, does not wait
        import time; time.sleep(0.5)
        os._exit(0)
        """,
        otlp_grpc_recorder.endpoint,
    )
    assert result.returncode == 0, result.stderr
    assert len(otlp_grpc_recorder.wait_for_calls(1, timeout_s=15)[0].spans) >= 1


def test_a_forked_child_gets_an_export_process_of_its_own(
    otlp_grpc_recorder: OtlpGrpcRecorder,
) -> None:
    result = _script(
        """
        from agent_trace import _runtime
        sink = _runtime.current().workers[0].sink
        with agent_trace.session("parent", agents=["a"]) as s, s.turn("a"):
            pass
        assert agent_trace.force_flush(timeout_s=10)
        pid = os.fork()
        if pid == 0:
            import psutil
            # None started by the fork itself: a child that never traces needs none.
            print("idle", len(psutil.Process().children()), flush=True)
            with agent_trace.session("child", agents=["a"]) as s, s.turn("a"):
                pass
            ok = agent_trace.force_flush(timeout_s=10)
            print("child", sink.pid, ok, flush=True)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        with agent_trace.session("parent-again", agents=["a"]) as s, s.turn("a"):
            pass
        print("parent", sink.pid, agent_trace.force_flush(timeout_s=10), status, flush=True)
        """,
        otlp_grpc_recorder.endpoint,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    child_pid, child_ok = lines["child"].split()
    parent_pid, parent_ok, status = lines["parent"].split()
    assert child_ok == "True" and parent_ok == "True" and status == "0"
    assert lines["idle"] == "0"
    assert child_pid != parent_pid
    assert len(otlp_grpc_recorder.spans()) == 6


def test_the_export_process_ignores_the_terminal_interrupt(
    otlp_grpc_recorder: OtlpGrpcRecorder,
) -> None:
    # Ctrl-C reaches the whole process group: the application flushes at exit through it.
    sink = _configure(otlp_grpc_recorder)
    _session("interrupted")
    os.kill(_started(sink), signal.SIGINT)
    time.sleep(0.2)
    assert sink.exit_code is None and psutil.Process(sink.pid).status() != psutil.STATUS_ZOMBIE
    assert agent_trace.force_flush(timeout_s=10)
    assert len(otlp_grpc_recorder.spans()) == 2
