"""A FastAPI endpoint doing 0.5 ms of work, served by uvicorn: throughput and single-connection
p99 latency with agent-trace (OTLP/gRPC and Sentry envelope sinks sending to the receivers
process), against the same app with OpenTelemetry's FastAPI instrumentation alone and a
discarding exporter.

Both servers run side by side for the whole figure (one idle while the other is measured);
each round loads them in a random order with `benchmarks._loadgen`, first closed-loop on 8
connections (throughput), then on one connection (latency). Needs the `fastapi` extra and
uvicorn.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import _fixtures as fx
from benchmarks._harness import Row, Settings, judge, quantile

_ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT = "FastAPI throughput, agent-trace / OTel instrumentation"
LATENCY = "FastAPI p99 latency, 1 connection, agent-trace / OTel"


class Server:
    def __init__(self, variant: str, rx: fx.Receivers) -> None:
        self.variant = variant
        self.port = fx.closed_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
        env.update(
            BENCH_APP=variant,
            PYTHONPATH=str(_ROOT),
            OTEL_SERVICE_NAME="bench-api",
            OTEL_EXPORTER_OTLP_ENDPOINT=rx.grpc_endpoint,
            SENTRY_DSN=rx.dsn,
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "benchmarks._fastapi_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
        )
        import psutil

        self.stats = psutil.Process(self.process.pid)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.variant} server exited")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/work", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the {self.variant} server did not answer within 30 s")

    def cpu_s(self) -> float:
        times = self.stats.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _load(port: int, connections: int, duration_s: float) -> dict[str, Any]:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks._loadgen",
            str(port),
            "/work",
            str(connections),
            str(duration_s),
            "1000000",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
    )
    result: dict[str, Any] = json.loads(output.stdout)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} requests failed")
    return result


def run(settings: Settings) -> list[Row]:
    duration_s = 1.0 if settings.quick else 3.0
    rounds = 2 if settings.quick else 8
    rng = random.Random(settings.seed)
    throughput: dict[str, list[float]] = {"otel": [], "agent_trace": []}
    p99: dict[str, list[float]] = {"otel": [], "agent_trace": []}
    cpu_per_request: dict[str, list[float]] = {"otel": [], "agent_trace": []}
    with fx.receivers() as rx:
        servers = [Server("otel", rx), Server("agent_trace", rx)]
        try:
            for server in servers:
                _load(server.port, 8, duration_s)  # warm-up
            for _ in range(rounds):
                rng.shuffle(servers)
                for server in servers:
                    cpu_before = server.cpu_s()
                    loaded = _load(server.port, 8, duration_s)
                    used = server.cpu_s() - cpu_before
                    throughput[server.variant].append(loaded["requests"] / loaded["elapsed_s"])
                    cpu_per_request[server.variant].append(used / loaded["requests"])
                    single = _load(server.port, 1, duration_s)
                    p99[server.variant].append(single["p99_ms"])
        finally:
            for server in servers:
                server.stop()
        counts = rx.stats()

    def row(figure: str, values: dict[str, list[float]], goal: str, unit: str) -> Row:
        ratios = [a / b for a, b in zip(values["agent_trace"], values["otel"], strict=True)]
        median = statistics.median(ratios)
        ours, theirs = statistics.median(values["agent_trace"]), statistics.median(values["otel"])
        cpu = {k: statistics.median(v) * 1e6 for k, v in cpu_per_request.items()}
        return Row(
            figure=figure,
            value=median,
            unit="x",
            low=quantile(ratios, 0.1),
            high=quantile(ratios, 0.9),
            goal=goal,
            met=judge(median, goal),
            detail=f"{ours:.1f} vs {theirs:.1f} {unit}, {rounds} rounds of {duration_s:g} s; "
            f"server CPU per request {cpu['agent_trace']:.0f} vs {cpu['otel']:.0f} us; "
            f"received {counts}",
            extra={"ratios": ratios, "agent_trace": values["agent_trace"], "otel": values["otel"]},
        )

    return [
        row(THROUGHPUT, throughput, ">= 0.90", "req/s"),
        row(LATENCY, p99, "<= 1.20", "ms"),
    ]
