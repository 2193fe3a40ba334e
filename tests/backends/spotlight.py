"""A real Spotlight sidecar (Sentry's local event sink) for the integration tests.

Runs `spotlight/server.mjs`, which starts the `@spotlightjs/spotlight` library on 127.0.0.1
(never its CLI: that phones home to sentry.io and listens on every interface). Sentry SDKs
send to it with the DSN `http://public@127.0.0.1:PORT/0`; the envelopes are read back from its
server-sent-event stream.

Example:
    spotlight = Spotlight().start()
    sentry_sdk.init(dsn=spotlight.dsn, traces_sample_rate=1.0)
    ...
    sentry_sdk.flush()
    [transaction] = spotlight.wait_for_transactions(1)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.backends._support import (
    LOOPBACK,
    SETUP_HINT,
    BackendError,
    ManagedProcess,
    http_request,
    poll,
    scrubbed_env,
)

SPOTLIGHT_DIR = Path(__file__).with_name("spotlight")
SPOTLIGHT_PACKAGE = SPOTLIGHT_DIR / "node_modules" / "@spotlightjs" / "spotlight" / "package.json"

# Keys Spotlight adds to every envelope header it parses; they were not sent by the SDK.
_SPOTLIGHT_HEADER_PREFIX = "__spotlight_"


@dataclass(frozen=True)
class EnvelopeItem:
    """One item of an envelope: its header and its payload (JSON, or bytes for binary items)."""

    header: dict[str, Any]
    payload: Any

    @property
    def type(self) -> str | None:
        value = self.header.get("type")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Envelope:
    """A Sentry envelope as the SDK sent it, read back from Spotlight."""

    header: dict[str, Any]
    items: list[EnvelopeItem]
    spotlight_id: str = ""
    content_type: str = ""
    spotlight_header: dict[str, Any] = field(default_factory=dict)

    def payloads(self, item_type: str) -> list[Any]:
        return [item.payload for item in self.items if item.type == item_type]


def parse_envelope(raw: bytes) -> Envelope:
    """Parses the envelope wire format: a JSON header line, then items of header + payload."""
    header_line, _, rest = raw.partition(b"\n")
    header = json.loads(header_line)
    items = []
    while rest.strip():
        item_header_line, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_header_line)
        length = item_header.get("length")
        if length is None:
            payload_bytes, _, rest = rest.partition(b"\n")
        else:
            payload_bytes, rest = rest[:length], rest[length:]
            # The newline after a payload with an explicit length is optional.
            rest = rest.removeprefix(b"\n")
        items.append(EnvelopeItem(item_header, _decode_payload(item_header, payload_bytes)))
    return Envelope(header, items)


def _decode_payload(item_header: dict[str, Any], payload: bytes) -> Any:
    if item_header.get("type") == "attachment" or item_header.get("content_type") not in (
        None,
        "application/json",
    ):
        return payload
    try:
        return json.loads(payload)
    except ValueError:
        return payload


def _from_stream_event(content_type: str, data: str) -> Envelope:
    """An envelope from one `/stream` event, with Spotlight's own additions taken out again."""
    header, raw_items = json.loads(data)
    spotlight_header = {k: v for k, v in header.items() if k.startswith(_SPOTLIGHT_HEADER_PREFIX)}
    sdk_header = {k: v for k, v in header.items() if not k.startswith(_SPOTLIGHT_HEADER_PREFIX)}
    items = []
    for item_header, payload in raw_items:
        # Spotlight copies the item type into every JSON payload. For transactions the SDK sent
        # the same value; "event" is never a valid Sentry event type, so there it is Spotlight's.
        is_event = item_header.get("type") == "event"
        if is_event and isinstance(payload, dict) and payload.get("type") == "event":
            payload = {k: v for k, v in payload.items() if k != "type"}
        items.append(EnvelopeItem(item_header, payload))
    return Envelope(
        sdk_header,
        items,
        spotlight_id=str(spotlight_header.get("__spotlight_envelope_id", "")),
        content_type=content_type,
        spotlight_header=spotlight_header,
    )


class _StreamReader:
    """Reads `GET /stream` on a daemon thread and hands each envelope over through a queue.

    A thread, because a read that times out leaves Python's socket file unusable; closing the
    socket from outside is the only clean way to stop a blocking server-sent-event reader.
    """

    def __init__(self, port: int, timeout_s: float) -> None:
        self.envelopes: queue.Queue[Envelope | BaseException] = queue.Queue()
        self._connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout_s)
        self._connection.request(
            "GET", "/stream?client=agent-trace-tests", headers={"Accept": "text/event-stream"}
        )
        response = self._connection.getresponse()
        if response.status != 200:
            raise BackendError(f"Spotlight GET /stream answered {response.status}")
        # The connect and the headers had a timeout; the stream itself blocks until closed.
        if self._connection.sock is not None:
            self._connection.sock.settimeout(None)
        self._response = response
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spotlight-stream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        event_name, data_lines = "", []
        try:
            for raw_line in self._response:
                line = raw_line.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data_lines:
                        self.envelopes.put(_from_stream_event(event_name, "\n".join(data_lines)))
                    event_name, data_lines = "", []
                elif line.startswith("event:"):
                    event_name = line[len("event:") :].strip()
                elif line.startswith("data:"):
                    data_lines.append(line[len("data:") :].removeprefix(" "))
        except Exception as error:
            # Nothing may escape this thread: a Sentry SDK under test would report it as an
            # error event of its own (its threading integration), into the sink being read.
            if not self._closing.is_set():
                self.envelopes.put(error)

    def close(self) -> None:
        self._closing.set()
        # Shutting the socket down makes the blocked read return; the reader thread still owns
        # the response object, so the connection is closed only once that thread is done.
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2.0)
        self._connection.close()


class Spotlight:
    """One Spotlight sidecar on 127.0.0.1; holds the last 500 envelopes it received."""

    def __init__(self, *, port: int = 0, node: str | None = None) -> None:
        node_path = node or shutil.which("node")
        if node_path is None:
            raise BackendError(f"node (20 or newer) is not installed: {SETUP_HINT}")
        if not SPOTLIGHT_PACKAGE.is_file():
            raise BackendError(f"Spotlight is not installed in {SPOTLIGHT_DIR}: {SETUP_HINT}")

        self.port = port
        self.startup_s: float | None = None
        self._node = node_path
        self._process = self._make_process()

    def _make_process(self) -> ManagedProcess:
        return ManagedProcess(
            "spotlight",
            [self._node, "server.mjs", "--port", str(self.port)],
            env=scrubbed_env(),
            cwd=SPOTLIGHT_DIR,
        )

    # --- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def dsn(self) -> str:
        """A DSN that makes a Sentry SDK send its envelopes straight to this Spotlight."""
        return f"http://public@{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    @property
    def is_running(self) -> bool:
        return self._process.is_running

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> Spotlight:
        """Starts the sidecar and returns once `GET /health` answers.

        Started again after a stop, it listens on the port it had before.
        """
        started = time.monotonic()
        if self._process.returncode is not None:
            # A fresh process (and log) with the port the first run was given.
            self._process = self._make_process()
        self._process.start()
        try:
            if self.port == 0:
                self.port = poll(self._announced_port, timeout_s=timeout_s)
            poll(self._healthy, timeout_s=timeout_s, describe=self._process.log_tail)
        except BaseException:
            self._process.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._process.stop(timeout_s)

    def restart(self, timeout_s: float = 30.0) -> Spotlight:
        """Stops and starts the sidecar on the same port; the buffered envelopes are lost."""
        self.stop()
        return self.start(timeout_s)

    def _announced_port(self) -> int | None:
        # server.mjs prints `listening 127.0.0.1:PORT` once the kernel has given it a port.
        self._process.check_alive()
        for line in self._process.log_path.read_text(errors="replace").splitlines():
            if line.startswith(f"listening {LOOPBACK}:"):
                return int(line.rsplit(":", 1)[1])
        return None

    def _healthy(self) -> bool | None:
        self._process.check_alive()
        try:
            response = http_request("GET", f"{self.url}/health", timeout_s=1.0)
        except OSError:
            return None
        return True if response.status == 200 and response.body == b"OK" else None

    # --- reading what arrived --------------------------------------------------------------

    def clear(self) -> None:
        """Forgets every buffered envelope (`DELETE /clear`)."""
        response = http_request("DELETE", f"{self.url}/clear")
        if response.status != 200:
            raise BackendError(f"Spotlight DELETE /clear answered {response.status}")

    def envelopes(self, timeout_s: float = 1.0, *, quiet_s: float = 0.3) -> list[Envelope]:
        """Every buffered envelope, oldest first.

        Spotlight replays its buffer to each new `/stream` reader and then keeps the stream
        open, so the end of the replay is recognised by quiet_s without a new event (or
        timeout_s in all).
        """
        return self._read(lambda _: False, timeout_s=timeout_s, quiet_s=quiet_s)

    def wait_for(
        self,
        predicate: Callable[[list[Envelope]], bool],
        *,
        timeout_s: float = 10.0,
        describe: str = "the expected envelopes",
    ) -> list[Envelope]:
        """Reads the stream until predicate(envelopes so far) holds; TimeoutError otherwise."""
        envelopes = self._read(predicate, timeout_s=timeout_s, quiet_s=None)
        if not predicate(envelopes):
            raise TimeoutError(
                f"gave up after {timeout_s:.1f} s waiting for {describe}; Spotlight has "
                f"{len(envelopes)} envelopes with items {_item_types(envelopes)}"
            )
        return envelopes

    def transactions(self, timeout_s: float = 1.0) -> list[dict[str, Any]]:
        """Payloads of every buffered transaction."""
        return _payloads(self.envelopes(timeout_s), "transaction")

    def error_events(self, timeout_s: float = 1.0) -> list[dict[str, Any]]:
        """Payloads of every buffered error (and message) event."""
        return _payloads(self.envelopes(timeout_s), "event")

    def wait_for_transactions(self, count: int, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        envelopes = self.wait_for(
            lambda envs: len(_payloads(envs, "transaction")) >= count,
            timeout_s=timeout_s,
            describe=f"{count} transactions",
        )
        return _payloads(envelopes, "transaction")

    def wait_for_error_events(self, count: int, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        envelopes = self.wait_for(
            lambda envs: len(_payloads(envs, "event")) >= count,
            timeout_s=timeout_s,
            describe=f"{count} error events",
        )
        return _payloads(envelopes, "event")

    def raw_envelope(self, envelope: Envelope) -> bytes:
        """The envelope's bytes as the SDK posted them (Spotlight stores them decompressed)."""
        response = http_request("GET", f"{self.url}/envelope/{envelope.spotlight_id}")
        if response.status != 200:
            raise BackendError(f"Spotlight has no envelope {envelope.spotlight_id}")
        return response.body

    def _read(
        self,
        predicate: Callable[[list[Envelope]], bool],
        *,
        timeout_s: float,
        quiet_s: float | None,
    ) -> list[Envelope]:
        deadline = time.monotonic() + timeout_s
        envelopes: list[Envelope] = []
        reader = _StreamReader(self.port, timeout_s=max(timeout_s, 1.0))
        try:
            while not predicate(envelopes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait_s = remaining if quiet_s is None else min(remaining, quiet_s)
                try:
                    received = reader.envelopes.get(timeout=wait_s)
                except queue.Empty:
                    if quiet_s is not None:
                        break
                    continue
                if isinstance(received, BaseException):
                    raise BackendError(f"Spotlight's /stream failed: {received!r}")
                envelopes.append(received)
        finally:
            reader.close()
        return envelopes


def _payloads(envelopes: list[Envelope], item_type: str) -> list[dict[str, Any]]:
    return [payload for envelope in envelopes for payload in envelope.payloads(item_type)]


def _item_types(envelopes: list[Envelope]) -> list[str | None]:
    return [item.type for envelope in envelopes for item in envelope.items]
