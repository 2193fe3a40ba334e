"""Plumbing shared by the test backends: ports, HTTP on loopback, child processes, polling."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

LOOPBACK = "127.0.0.1"
SETUP_HINT = "run `bash tests/backends/setup.sh` (as root on a fresh machine) to install it"

T = TypeVar("T")

# Variables that would make a server send its own telemetry somewhere, or change what it
# records, are never passed on to the servers the tests start.
_SCRUBBED_ENV_PREFIXES = ("OTEL_", "SENTRY_", "SPOTLIGHT_")

# The harness's own HTTP calls must not go through a proxy from the environment, and must not
# be traced by an instrumented client library (a feedback loop into the backend under test):
# a plain urllib opener with proxies switched off has neither.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BackendError(RuntimeError):
    """A test backend could not be started, or answered something unexpected."""


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without OTEL_*, SENTRY_* and SPOTLIGHT_* variables, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class HttpResponse:
    """Status, headers and body of one answered request."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
) -> HttpResponse:
    """One HTTP request to a loopback server; error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return HttpResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return HttpResponse(error.code, dict(error.headers.items()), error.read())


def http_json(url: str, *, timeout_s: float = 5.0) -> Any:
    """GETs url and decodes its JSON body; any status but 200 raises BackendError."""
    response = http_request("GET", url, timeout_s=timeout_s)
    if response.status != 200:
        raise BackendError(f"GET {url} answered {response.status}: {response.body[:500]!r}")
    return response.json()


def poll(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    describe: Callable[[], str] | None = None,
) -> T:
    """Calls probe until it returns something other than None, or raises TimeoutError.

    The probe runs at least once, even with a zero timeout. Exceptions from the probe propagate:
    a backend that fails is a different problem from one that has not caught up yet.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            detail = f": {describe()}" if describe else ""
            raise TimeoutError(f"gave up after {timeout_s:.1f} s{detail}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class ListeningSocket:
    """One socket a process listens on (TCP) or has bound (UDP)."""

    pid: int
    protocol: str
    address: str
    port: int

    @property
    def is_loopback_only(self) -> bool:
        return self.address == LOOPBACK


def listening_sockets(pid: int) -> list[ListeningSocket]:
    """Sockets that the process and its children accept connections or datagrams on."""
    root = psutil.Process(pid)
    found = []
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in process.net_connections(kind="inet"):
                is_tcp = conn.type == socket.SOCK_STREAM
                if is_tcp and conn.status != psutil.CONN_LISTEN:
                    continue
                if not is_tcp and conn.raddr:
                    # A connected UDP socket (a DNS lookup, say) accepts nothing from others.
                    continue
                found.append(
                    ListeningSocket(
                        process.pid, "tcp" if is_tcp else "udp", conn.laddr.ip, conn.laddr.port
                    )
                )
    return found


class ManagedProcess:
    """A server process the harness started, stopped by its PID and never by name.

    Its output goes to a log file so that a failed start can show why.
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self._args = args
        self._env = dict(env)
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        log_dir = Path(tempfile.mkdtemp(prefix=f"agent-trace-{name}-"))
        self.log_path = log_dir / f"{name}.log"
        atexit.register(self.stop)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def start(self) -> None:
        if self.is_running:
            raise BackendError(f"{self.name} is already running (pid {self.pid})")

        # Appending keeps the log of an earlier run of the same server (a restart) readable.
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {' '.join(self._args)}\n".encode())
            log.flush()
            # A session of its own: a Ctrl-C in the terminal running pytest reaches pytest only,
            # and the fixtures decide when the servers stop.
            self._popen = subprocess.Popen(
                self._args,
                cwd=self._cwd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after timeout_s; a stopped process is left alone."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return

        popen.terminate()
        try:
            popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raises BackendError with the end of the log when the process has exited."""
        if self._popen is not None and self._popen.poll() is not None:
            raise BackendError(
                f"{self.name} exited with status {self._popen.returncode}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )


def start_uvicorn(
    name: str,
    app: str,
    port: int,
    *,
    env: Mapping[str, str],
    cwd: Path,
    extra_args: Sequence[str] = (),
    health_path: str = "/health",
) -> ManagedProcess:
    """uvicorn serving `app` on 127.0.0.1:`port` in a process of its own, returned once
    `health_path` answers 200. A service that exits raises BackendError, one that does not
    answer in 30 s TimeoutError, both with the end of its log; either way it is stopped by PID."""
    process = ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--log-level",
            "warning",
            *extra_args,
        ],
        env=env,
        cwd=cwd,
    )
    process.start()
    url = f"http://{LOOPBACK}:{port}{health_path}"

    def healthy() -> bool | None:
        process.check_alive()
        try:
            return True if http_request("GET", url).status == 200 else None
        except OSError:
            return None

    try:
        poll(healthy, timeout_s=30.0, interval_s=0.1, describe=process.log_tail)
    except BaseException:
        process.stop()
        raise
    return process
