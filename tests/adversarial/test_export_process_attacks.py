"""Attacks on the export process (`agent_trace.pipeline.offload`), as users will meet them.

An export process that never answers (stopped, or starved of CPU in the idle scheduling
class), one still starting when the application shuts down, an application frozen into one
binary, odd `sys.path` entries, secrets the application put in its own environment. Every
server is a recorder the test starts on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

import agent_trace
from agent_trace import _log, _runtime
from agent_trace.pipeline.offload import parent as offload_parent
from agent_trace.pipeline.offload.parent import ExportProcessSink
from agent_trace.pipeline.offload.wire import MAX_FRAME, SpanEncoder, encode_spans
from agent_trace.pipeline.worker import SinkWorker
from tests.adversarial._support import SECRET
from tests.backends.otlp_recorder import OtlpGrpcRecorder, closed_port


@pytest.fixture(autouse=True)
def _shut_down() -> Iterator[None]:
    yield
    agent_trace.shutdown(timeout_s=5)
    # Warnings logged once a minute here must not be missing from the next test's log.
    _log._reset_for_tests()


def _configure(recorder: OtlpGrpcRecorder, **kwargs: Any) -> tuple[ExportProcessSink, SinkWorker]:
    agent_trace.configure("offload-attack", otlp_endpoint=recorder.endpoint, _env={}, **kwargs)
    pipeline = _runtime.current()
    assert pipeline is not None
    (worker,) = [w for w in pipeline.workers if isinstance(w.sink, ExportProcessSink)]
    assert isinstance(worker.sink, ExportProcessSink)
    return worker.sink, worker


def _session(name: str) -> None:
    with agent_trace.session(name, agents=["ethics"]) as session, session.turn("ethics"):
        pass


def _wait_until(condition: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _started_pid(sink: ExportProcessSink) -> int:
    assert sink.started(20), sink._failure
    return sink.pid


def _lost(reason: str) -> int:
    return agent_trace.dropped_spans().get(("otlp", reason), 0)


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Pids the test stopped with SIGSTOP; they are killed afterwards (a stopped process
    would otherwise outlive the test)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- an export process that does not answer -----------------------------------------------------


def test_shutdown_counts_what_an_unresponsive_export_process_never_confirmed(
    otlp_grpc_recorder: OtlpGrpcRecorder, stopped: list[int]
) -> None:
    sink, _ = _configure(otlp_grpc_recorder)
    assert sink.started(20)
    os.kill(sink.pid, signal.SIGSTOP)
    stopped.append(sink.pid)
    before = sum(agent_trace.dropped_spans().values())
    _session("frozen-exporter")

    started = time.monotonic()
    assert agent_trace.shutdown(timeout_s=1) is False
    assert time.monotonic() - started < 5  # the deadline holds (it does today)
    # Two spans, neither delivered: both counted by the time shutdown returns.
    assert sum(agent_trace.dropped_spans().values()) - before == 2
    assert otlp_grpc_recorder.spans() == []


def test_flush_keeps_its_deadline_while_the_export_process_is_stopped(
    otlp_grpc_recorder: OtlpGrpcRecorder, stopped: list[int]
) -> None:
    # Enough spans to fill the socket's buffer: the export thread blocks in its send.
    sink, worker = _configure(otlp_grpc_recorder, max_queue_size=1024, max_export_batch_size=256)
    assert sink.started(20)
    os.kill(sink.pid, signal.SIGSTOP)
    stopped.append(sink.pid)
    pipeline = _runtime.current()
    assert pipeline is not None
    tracer = pipeline.tracer
    for index in range(10000):
        with tracer.start_as_current_span(f"span {index}") as span:
            for key in range(40):
                span.set_attribute(f"field.{key}", "x" * 1000)
    # The export thread is inside its send, holding the socket.
    _wait_until(lambda: worker.in_flight > 0 and sink._write_lock.locked())

    started = time.monotonic()
    assert agent_trace.force_flush(timeout_s=0.5) is False
    assert agent_trace.force_flush(timeout_s=0) is False
    assert time.monotonic() - started < 3
    # The application's threads never wait for the stopped process: a full queue drops.
    assert _lost("queue_full") > 0


# -- shutdown before the export process is ready ------------------------------------------------


@pytest.fixture
def slow_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The export process takes 3 s to start (a loaded machine, a cold import cache)."""
    monkeypatch.setattr(
        offload_parent, "_BOOT", "import time; time.sleep(3); " + offload_parent._BOOT
    )


def test_a_shutdown_with_time_enough_waits_for_a_starting_export_process(
    otlp_grpc_recorder: OtlpGrpcRecorder, slow_start: None
) -> None:
    # A short script: configure, a few spans, exit. The process is not ready when shutdown
    # starts; with time enough, everything still goes through it.
    sink, _ = _configure(otlp_grpc_recorder)
    before = sum(agent_trace.dropped_spans().values())
    _session("short-script")

    assert agent_trace.shutdown(timeout_s=15)
    assert len(otlp_grpc_recorder.spans()) == 2
    assert sum(agent_trace.dropped_spans().values()) == before
    assert sink._fallback is None and sink.process_exits == 0


def test_spans_waiting_for_a_starting_export_process_are_counted_at_shutdown(
    otlp_grpc_recorder: OtlpGrpcRecorder, slow_start: None
) -> None:
    _configure(otlp_grpc_recorder)
    before = _lost("shutdown_timeout")
    _session("too-soon")

    assert agent_trace.shutdown(timeout_s=0.5) is False
    assert _lost("shutdown_timeout") - before == 2


def test_nothing_is_built_in_process_after_shutdown(
    otlp_grpc_recorder: OtlpGrpcRecorder, slow_start: None, caplog: pytest.LogCaptureFixture
) -> None:
    sink, worker = _configure(otlp_grpc_recorder)
    _session("too-soon")

    with caplog.at_level(logging.WARNING, logger="agent_trace"):
        agent_trace.shutdown(timeout_s=0.5)
        _wait_until(lambda: sink.exit_code is not None)
        worker._thread.join(15)
        assert not worker._thread.is_alive()

    assert sink._fallback is None
    assert not [r for r in caplog.records if "run in this process" in r.getMessage()]
    assert sink.exit_code == 0  # left on its own, not killed


# -- how the export process is started ----------------------------------------------------------


def test_a_path_object_on_sys_path_does_not_stop_the_export_process(
    otlp_grpc_recorder: OtlpGrpcRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen in projects' conftest.py and entry points: sys.path.insert(0, Path(...)).
    monkeypatch.setattr(sys, "path", [*sys.path, pathlib.Path("/nonexistent"), b"/also-not"])
    sink, _ = _configure(otlp_grpc_recorder)
    assert sink.started(20), sink._failure
    _session("pathlike")
    assert agent_trace.force_flush(timeout_s=10)
    assert len(otlp_grpc_recorder.spans()) == 2


def test_a_frozen_application_is_not_started_again_as_its_export_process(
    otlp_grpc_recorder: OtlpGrpcRecorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # In a PyInstaller (or cx_Freeze, py2exe) binary, sys.executable is the application itself:
    # "running it with -c" starts the application again, which configures tracing again...
    marker = tmp_path / "started-again"
    app = tmp_path / "frozen-app"
    app.write_text(f"#!/bin/sh\ntouch {marker}\n")
    app.chmod(app.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(app))
    before = {p.pid for p in psutil.Process().children()}

    sink, _ = _configure(otlp_grpc_recorder)
    assert not sink.started(20)
    _session("frozen")
    assert agent_trace.force_flush(timeout_s=10)

    assert not marker.exists()
    assert {p.pid for p in psutil.Process().children()} <= before
    assert len(otlp_grpc_recorder.spans()) == 2  # in-process instead


def test_settings_holding_the_applications_own_text_class_reach_the_export_process(
    otlp_grpc_recorder: OtlpGrpcRecorder,
) -> None:
    # Header names and resource keys from a class of the application's (an enum, a constant
    # type) that the export process cannot import: configure() raised "Can't pickle local
    # object" and left the process it had just started running.
    class Key(str):
        pass

    before = {p.pid for p in psutil.Process().children()}
    agent_trace.configure(
        "offload-attack",
        otlp_endpoint=otlp_grpc_recorder.endpoint,
        otlp_headers={Key("x-team-key"): Key("value")},
        resource_attributes={Key("team"): Key("review")},
        _env={},
    )
    pipeline = _runtime.current()
    assert pipeline is not None
    (sink,) = [w.sink for w in pipeline.workers if isinstance(w.sink, ExportProcessSink)]
    assert _started_pid(sink) not in before

    _session("own-classes")
    assert agent_trace.force_flush(timeout_s=10)
    call = otlp_grpc_recorder.calls[0]
    assert call.metadata_value("x-team-key") == "value"
    resource = call.request.resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["team"] == "review"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_secrets_the_application_put_in_its_environment_stay_out_of_the_export_process(
    otlp_grpc_recorder: OtlpGrpcRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # python-dotenv and secret managers fill os.environ at run time; /proc/<pid>/environ of the
    # application shows its environment as it started, the export process's shows what it got.
    monkeypatch.setenv("SENTRY_DSN", f"http://{SECRET}@127.0.0.1:9/1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-api-key={SECRET}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"x-api-key={SECRET}")
    sink, _ = _configure(otlp_grpc_recorder, otlp_headers={"x-api-key": SECRET})
    assert sink.started(20)

    assert SECRET.encode() not in Path(f"/proc/{sink.pid}/environ").read_bytes()
    assert SECRET.encode() not in Path(f"/proc/{sink.pid}/cmdline").read_bytes()
    assert SECRET not in sink.describe()
    # The header still reaches the receiver: it went down the socket, not the environment.
    _session("with-header")
    assert agent_trace.force_flush(timeout_s=10)
    assert otlp_grpc_recorder.calls[0].metadata_value("x-api-key") == SECRET


def test_an_application_without_standard_error_gives_its_export_process_none(
    otlp_grpc_recorder: OtlpGrpcRecorder, tmp_path: Path
) -> None:
    # A daemon started with `>&- 2>&-`: its next descriptors opened are 1 and 2, the frames'
    # socket among them; the export process wrote its standard error down that socket.
    report = tmp_path / "descriptors.json"
    code = textwrap.dedent(
        f"""
        import json, os
        os.close(1)
        os.close(2)
        import agent_trace
        from agent_trace import _runtime
        endpoint = {otlp_grpc_recorder.endpoint!r}
        agent_trace.configure("closed-stderr", otlp_endpoint=endpoint, _env={{}})
        sink = _runtime.current().workers[0].sink
        assert sink.started(20)
        fds = {{n: os.readlink(f"/proc/{{sink.pid}}/fd/{{n}}") for n in ("1", "2")}}
        with agent_trace.session("quiet", agents=["a"]) as s, s.turn("a"):
            pass
        ok = agent_trace.force_flush(timeout_s=10)
        with open({str(report)!r}, "w") as out:
            json.dump({{"fds": fds, "ok": ok}}, out)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=False)
    assert result.returncode == 0
    outcome = json.loads(report.read_text())
    assert outcome["ok"] is True
    assert not [target for target in outcome["fds"].values() if target.startswith("socket:")]
    assert len(otlp_grpc_recorder.spans()) == 2


def test_a_pipeline_whose_export_process_never_started_shuts_down_quietly(
    otlp_grpc_recorder: OtlpGrpcRecorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A reconfiguration shuts the previous pipeline down; no span ever needed its sinks.
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    sink, _ = _configure(otlp_grpc_recorder)
    with caplog.at_level(logging.WARNING):
        assert agent_trace.shutdown(timeout_s=10)
    assert sink._fallback is None
    assert [r.getMessage() for r in caplog.records] == []


# -- what goes down the socket ------------------------------------------------------------------


def _heavy_spans(count: int) -> list[ReadableSpan]:
    """Spans at the SDK's default limits: 128 attributes of 4160 characters each."""
    pipeline = _runtime.current()
    assert pipeline is not None
    resource = pipeline.provider.resource
    return [
        ReadableSpan(
            f"heavy {index}",
            context=SpanContext(0xFEED, index + 1, is_remote=False, trace_flags=TraceFlags(1)),
            resource=resource,
            # Distinct texts: marshal writes a repeated object once.
            attributes={f"field.{key}": f"{index}.{key}." + "v" * 4150 for key in range(128)},
            start_time=1,
            end_time=2,
        )
        for index in range(count)
    ]


def test_a_batch_larger_than_a_frame_does_not_end_the_export_process(
    otlp_grpc_recorder: OtlpGrpcRecorder,
) -> None:
    # 512 such spans make 273 MB of tuples, over the 256 MB a frame may carry: the export
    # process took the frame for a broken stream and left, for good.
    sink, _ = _configure(otlp_grpc_recorder, export_timeout_s=2)
    pid = _started_pid(sink)
    heavy = _heavy_spans(512)
    assert len(encode_spans(SpanEncoder(None), heavy)[0]) > MAX_FRAME
    failed_before = _lost("export_failed")

    sink.export(heavy)
    del heavy
    _session("after-the-heavy-batch")
    agent_trace.force_flush(timeout_s=60)

    assert sink.process_exits == 0 and sink._fallback is None and sink.pid == pid
    assert psutil.Process(pid).is_running()
    # The receiver refuses messages over 4 MB: the heavy spans are counted, not lost silently.
    _wait_until(lambda: _lost("export_failed") - failed_before >= 512, timeout_s=60)


# -- what the export process logs ---------------------------------------------------------------


def test_an_export_failure_warns_once_a_minute_across_reconfigurations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    with caplog.at_level(logging.WARNING, logger="agent_trace"):
        for attempt in range(3):
            agent_trace.configure(
                "offload-attack", otlp_endpoint=endpoint, export_timeout_s=1, _env={}
            )
            _session(f"refused {attempt}")
            assert agent_trace.force_flush(timeout_s=10) is False
    warnings = [r for r in caplog.records if "could not be delivered" in r.getMessage()]
    # As with export_process=False: one line a minute, every drop counted.
    assert len(warnings) == 1
    assert _lost("export_failed") >= 6
