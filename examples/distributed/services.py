"""Starting the agent services, waiting until they are healthy, and stopping them by PID.

Each agent gets a listening socket bound here, on 127.0.0.1 and a port the kernel picks, and
inherits it (`uvicorn --fd`): no other program can take the port between choosing and binding.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from examples.distributed import service_name

__all__ = ["AgentProcess", "start_agents", "stop_agents", "wait_until_healthy"]

REPO_ROOT = Path(__file__).resolve().parents[2]

# What the agents inherit from the coordinator's environment: where spans go, and how.
_PASSED_ON_PREFIXES = ("OTEL_EXPORTER_OTLP_", "OTEL_TRACES_SAMPLER", "AGENT_TRACE_")
_PASSED_ON = ("SENTRY_DSN", "SENTRY_ENVIRONMENT", "SENTRY_RELEASE", "CONSTITUTIONAL_HASH")


@dataclass
class AgentProcess:
    """One running agent service."""

    agent: str
    service: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    health: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"


def agent_environment(agent: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of an agent process: its names, plus the coordinator's sink settings."""
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith(("OTEL_", "SENTRY_", "AGENT_TRACE_")) and k != "CONSTITUTIONAL_HASH"
    }
    env.update(
        {k: v for k, v in base.items() if k.startswith(_PASSED_ON_PREFIXES) or k in _PASSED_ON}
    )
    env["AGENT_NAME"] = agent
    env["OTEL_SERVICE_NAME"] = service_name(agent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), base.get("PYTHONPATH")) if p)
    return env


def start_agents(agents: Iterable[str], env: Mapping[str, str]) -> list[AgentProcess]:
    """Start one uvicorn process per agent, each on its own socket on 127.0.0.1."""
    started: list[AgentProcess] = []
    log_dir = Path(tempfile.mkdtemp(prefix="agent-trace-distributed-"))
    try:
        for agent in agents:
            started.append(_start_one(agent, env, log_dir))
    except BaseException:
        stop_agents(started)
        raise
    return started


def _start_one(agent: str, env: Mapping[str, str], log_dir: Path) -> AgentProcess:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = int(listener.getsockname()[1])
        log_path = log_dir / f"{agent}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "examples.distributed.agent:app",
                    "--fd",
                    str(listener.fileno()),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                # The coordinator's directory, so a relative local trace file is the same file.
                env=agent_environment(agent, env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                # Its own process group: a Ctrl-C reaches the coordinator, which stops the agents.
                start_new_session=True,
            )
    finally:
        # The child holds its own copy of the socket now.
        listener.close()
    return AgentProcess(agent, service_name(agent), port, process, log_path)


def wait_until_healthy(agents: Iterable[AgentProcess], timeout_s: float = 30.0) -> None:
    """Return once every agent's health route answers; RuntimeError naming the one that did not."""
    deadline = time.monotonic() + timeout_s
    # A plain client: health checks are not part of any session's trace.
    with httpx.Client(timeout=1.0) as client:
        for agent in agents:
            while True:
                if agent.process.poll() is not None:
                    raise RuntimeError(
                        f"{agent.service} exited with status {agent.process.returncode}:\n"
                        f"{agent.log_tail()}"
                    )
                try:
                    response = client.get(f"{agent.url}/health")
                    if response.status_code == 200:
                        agent.health = response.json()
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{agent.service} did not answer {agent.url}/health within "
                        f"{timeout_s:.0f} s:\n{agent.log_tail()}"
                    )
                time.sleep(0.1)


def stop_agents(agents: Iterable[AgentProcess], timeout_s: float = 10.0) -> list[int | None]:
    """SIGTERM each agent by its PID (it flushes its spans on the way out), SIGKILL if it hangs.

    Returns each process's exit status.
    """
    agents = list(agents)
    for agent in agents:
        if agent.process.poll() is None:
            agent.process.terminate()
    statuses: list[int | None] = []
    for agent in agents:
        try:
            statuses.append(agent.process.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            agent.process.kill()
            statuses.append(agent.process.wait(timeout=timeout_s))
    return statuses
