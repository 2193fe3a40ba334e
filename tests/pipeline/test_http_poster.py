"""HttpPoster against servers that behave the way real servers and networks do.

Every server here is a raw socket on 127.0.0.1 started by the test and stopped at its end, so
the bytes on the wire are exactly the ones written below: answers framed each way HTTP/1.x
allows, connections closed while idle or in the middle of an answer, answers that never come,
garbage, proxies (a plain-HTTP one and a CONNECT tunnel), TLS with a certificate made for
the test, close() from another thread and fork. HttpError means "no answer"; any HttpAnswer
is an answer.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from agent_trace.pipeline.sinks import _http
from agent_trace.pipeline.sinks._http import HttpAnswer, HttpError, HttpPoster

pytestmark = pytest.mark.integration

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
PATH = "/api/7/envelope/"
# Bounds for "returned promptly": far above what any of these exchanges needs, far below
# the timeouts that a hung request would wait out.
PROMPT_S = 5.0
LONG_TIMEOUT_S = 10.0


class Request(NamedTuple):
    head: bytes  # request line and header lines, without the empty line that ends them
    body: bytes

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


class Conn:
    """One accepted connection, seen from the server's side."""

    def __init__(self, sock: socket.socket, server: Server, index: int) -> None:
        self.sock = sock
        self.server = server
        self.index = index
        self.buffer = b""
        self.others: list[socket.socket] = []

    def read_request(self) -> Request | None:
        """The next whole request, or None when the client closed the connection first."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        request = Request(head, b"")
        length = int(request.header(b"content-length") or 0)
        while len(self.buffer) < length:
            if not self._fill():
                return None
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        request = Request(head, body)
        self.server.record(self.index, request)
        return request

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_bytewise(self, data: bytes) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(data)):
            self.sock.sendall(data[index : index + 1])

    def hang(self) -> None:
        """Keep the connection open and say nothing until the server stops."""
        self.server.stopping.wait()

    def reset(self) -> None:
        """Close with a TCP reset instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def abort(self) -> None:
        for sock in [self.sock, *self.others]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


Handler = Callable[[Conn], None]


class Server:
    """Accepts connections on 127.0.0.1 and runs `handler` on each in a thread of its own."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.stopping = threading.Event()
        self._changed = threading.Condition()
        self.conns: list[Conn] = []
        # (connection index, request) in arrival order
        self.requests: list[tuple[int, Request]] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def connections(self) -> int:
        with self._changed:
            return len(self.conns)

    def bodies(self) -> list[bytes]:
        with self._changed:
            return [request.body for _, request in self.requests]

    def bodies_by_connection(self) -> list[list[bytes]]:
        with self._changed:
            return [
                [request.body for index, request in self.requests if index == conn.index]
                for conn in self.conns
            ]

    def record(self, index: int, request: Request) -> None:
        with self._changed:
            self.requests.append((index, request))
            self._changed.notify_all()

    def wait_for_requests(self, count: int) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, PROMPT_S):
                raise AssertionError(f"{len(self.requests)} requests arrived, not {count}")

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                conn = Conn(sock, self, len(self.conns))
                self.conns.append(conn)
                self._changed.notify_all()
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, conn: Conn) -> None:
        try:
            if self._tls is not None:
                conn.sock = self._tls.wrap_socket(conn.sock, server_side=True)
            self._handler(conn)
        except (OSError, ValueError):
            pass  # the client went away, or the test stopped the server under the handler
        finally:
            with contextlib.suppress(OSError):
                conn.sock.close()

    def stop(self) -> None:
        self.stopping.set()
        self._acceptor.join(PROMPT_S)
        self._listener.close()
        for conn in list(self.conns):
            conn.abort()
        for thread in self._threads:
            thread.join(PROMPT_S)


# Handlers -----------------------------------------------------------------------------------


def answering(answer: bytes = OK) -> Handler:
    """Answers every request on a connection with `answer` and keeps the connection open."""

    def handle(conn: Conn) -> None:
        while conn.read_request() is not None:
            conn.send(answer)

    return handle


def answering_once(answer: bytes, then: Callable[[Conn], None]) -> Handler:
    """Answers the first request with `answer`, then does `then` to the connection."""

    def handle(conn: Conn) -> None:
        if conn.read_request() is None:
            return
        conn.send(answer)
        then(conn)

    return handle


def close(conn: Conn) -> None:
    conn.sock.close()


def pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def tunnelling_to(port: int) -> Handler:
    """A CONNECT proxy that takes any tunnel request and relays it to 127.0.0.1:`port`."""

    def handle(conn: Conn) -> None:
        if conn.read_request() is None:
            return
        upstream = socket.create_connection(("127.0.0.1", port))
        conn.others.append(upstream)
        conn.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        back = threading.Thread(target=pipe, args=(upstream, conn.sock), daemon=True)
        back.start()
        if conn.buffer:
            upstream.sendall(conn.buffer)
        pipe(conn.sock, upstream)
        back.join(PROMPT_S)
        upstream.close()

    return handle


# Fixtures -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without proxies or extra trusted certificates."""
    for key in list(os.environ):
        if key.lower().endswith("_proxy") or key in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            monkeypatch.delenv(key)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(handler, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_poster() -> Iterator[Callable[..., HttpPoster]]:
    posters: list[HttpPoster] = []

    def make(
        url: str, *, timeout_s: float = PROMPT_S, headers: dict[str, str] | None = None
    ) -> HttpPoster:
        poster = HttpPoster(url, timeout_s=timeout_s, headers=headers or {})
        posters.append(poster)
        return poster

    yield make
    for poster in posters:
        poster.close()


@pytest.fixture
def background() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        yield executor


class Certificate(NamedTuple):
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for `localhost` and 127.0.0.1, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS tests need the openssl command line tool", pytrace=False)
    folder = tmp_path_factory.mktemp("tls")
    made = Certificate(folder / "cert.pem", folder / "key.pem")
    command = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    names = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    files = ["-keyout", str(made.key), "-out", str(made.cert)]
    subprocess.run(
        [openssl, *command.split(), "-subj", "/CN=localhost", "-addext", names, *files],
        check=True,
        capture_output=True,
    )
    return made


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


# Keeping the connection alive ---------------------------------------------------------------


def test_many_posts_share_one_connection(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(answering())
    poster = make_poster(server.url)

    answers = [poster.post(f"body {index}".encode()) for index in range(50)]

    assert {answer.status for answer in answers} == {200}
    assert server.connections == 1
    assert server.bodies() == [f"body {index}".encode() for index in range(50)]


def test_posts_from_many_threads_take_turns_on_the_one_connection(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    background: concurrent.futures.ThreadPoolExecutor,
) -> None:
    server = serve(answering())
    poster = make_poster(server.url)

    def post_many(thread: int) -> list[int]:
        return [poster.post(b"%d-%d" % (thread, index)).status for index in range(25)]

    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        statuses = [status for result in threads.map(post_many, range(4)) for status in result]

    assert statuses == [200] * 100
    assert server.connections == 1
    assert sorted(server.bodies()) == sorted(b"%d-%d" % (t, i) for t in range(4) for i in range(25))


# (answer, whether the client may send its next request on the same connection)
FRAMINGS = {
    "content-length": (OK, True),
    "chunked with extensions and trailers": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value;other\r\nhello\r\n1 ; spaced\r\n!\r\n0;last\r\n"
        b"X-Trailer: one\r\nX-Other: two\r\n\r\n",
        True,
    ),
    "chunked without trailers": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        True,
    ),
    "chunk larger than the header limit": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % 200_000
        + b"x" * 200_000
        + b"\r\n0\r\n\r\n",
        True,
    ),
    "content-length larger than the header limit": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"y" * 300_000,
        True,
    ),
    "100 continue first": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX-Ignored: 1\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew",
        True,
    ),
    "204 without a body": (b"HTTP/1.1 204 No Content\r\nServer: test\r\n\r\n", True),
    "a status line without a reason": (b"HTTP/1.1 202\r\nContent-Length: 0\r\n\r\n", True),
    "no headers at all": (b"HTTP/1.1 204 \r\n\r\n", True),
    "HTTP/1.0 with keep-alive": (
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
        True,
    ),
    # Each of these is answered on a connection the server then keeps open: reusing it
    # would get the next answer on it, and the connection count would say so.
    "Connection: close": (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        False,
    ),
    "HTTP/1.0 without keep-alive": (
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        False,
    ),
}


@pytest.mark.parametrize(
    ("framing", "bytewise"),
    [(name, False) for name in FRAMINGS]
    # Small answers also go one byte a write, so that every boundary falls between reads.
    + [(name, True) for name, (answer, _) in FRAMINGS.items() if len(answer) < 1000],
    ids=lambda value: {False: "whole", True: "byte-by-byte"}.get(value, value),
)
def test_every_framing_of_an_answer_is_read_to_its_end(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    framing: str,
    bytewise: bool,
) -> None:
    answer, reusable = FRAMINGS[framing]
    expected = int(answer.rsplit(b"HTTP/1.", 1)[1][2:5])

    def handle(conn: Conn) -> None:
        while conn.read_request() is not None:
            (conn.send_bytewise if bytewise else conn.send)(answer)

    server = serve(handle)
    poster = make_poster(server.url)

    statuses = [poster.post(b"first").status, poster.post(b"second").status]

    assert statuses == [expected, expected]
    assert server.connections == (1 if reusable else 2)
    assert server.bodies() == [b"first", b"second"]


def test_an_answer_without_a_length_runs_to_the_end_of_the_connection(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(answering_once(b"HTTP/1.1 202 Accepted\r\n\r\nbody until the end", close))
    poster = make_poster(server.url)

    assert poster.post(b"first").status == 202
    assert poster.post(b"second").status == 202
    assert server.connections == 2


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_body_sent_once(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster], how: str
) -> None:
    closed = threading.Event()

    def then(conn: Conn) -> None:
        # An idle timeout on the server: the kept-alive connection ends between requests.
        if how == "reset":
            conn.reset()
        else:
            conn.sock.close()
        closed.set()

    server = serve(answering_once(OK, then))
    poster = make_poster(server.url)
    assert poster.post(b"first").status == 200
    assert closed.wait(PROMPT_S)
    time.sleep(0.05)  # lets the FIN or RST reach the client's socket before it writes

    answer = poster.post(b"second")

    assert answer.status == 200
    assert server.connections == 2
    # The first connection never saw the second body; the second saw it once.
    assert server.bodies_by_connection() == [[b"first"], [b"second"]]


def test_a_request_the_server_closes_on_unanswered_is_sent_once_more_on_a_new_connection(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    def handle(conn: Conn) -> None:
        if conn.index == 0:
            conn.read_request()
            conn.send(OK)
            # The idle timer fires as the next request arrives: closed without a byte back.
            conn.read_request()
            conn.sock.close()
            return
        answering()(conn)

    server = serve(handle)
    poster = make_poster(server.url)
    poster.post(b"first")

    answer = poster.post(b"second")

    assert answer.status == 200
    assert server.bodies_by_connection() == [[b"first", b"second"], [b"second"]]


UNSOLICITED = {
    # Some servers say why they end an idle kept-alive connection before closing it.
    "a 408 before the close": b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n",
    # A body longer than its Content-Length, the rest sent after the answer was read.
    "the rest of a body longer than announced": b"ay, and more",
}


@pytest.mark.parametrize("unsolicited", list(UNSOLICITED))
def test_bytes_that_came_on_an_idle_connection_are_not_taken_for_the_next_answer(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster], unsolicited: str
) -> None:
    sent = threading.Event()

    def handle(conn: Conn) -> None:
        if conn.index == 0:
            conn.read_request()
            conn.send(OK)
            time.sleep(0.05)  # the client has read its answer by now, as in real life
            conn.send(UNSOLICITED[unsolicited])
            sent.set()
            conn.hang()
        answering()(conn)

    server = serve(handle)
    poster = make_poster(server.url)
    assert poster.post(b"first").status == 200
    assert sent.wait(PROMPT_S)
    time.sleep(0.05)  # lets the bytes reach the client's socket

    answer = poster.post(b"second")

    assert answer.status == 200
    assert server.bodies_by_connection() == [[b"first"], [b"second"]]


def test_a_connection_closed_after_a_100_continue_is_not_posted_to_again(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    def handle(conn: Conn) -> None:
        conn.read_request()
        conn.send(OK)
        conn.read_request()
        # The server took the second request in, then died before its final answer.
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sock.close()

    server = serve(handle)
    poster = make_poster(server.url)
    poster.post(b"first")

    with pytest.raises(HttpError):
        poster.post(b"second")

    assert server.bodies() == [b"first", b"second"]
    assert server.connections == 1


def test_a_post_interrupted_by_an_exception_leaves_no_half_read_connection_behind(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answered = threading.Event()

    def handle(conn: Conn) -> None:
        while conn.read_request() is not None:
            answered.wait(PROMPT_S)
            conn.send(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n" if conn.index else OK)

    server = serve(handle)
    poster = make_poster(server.url)
    read_head = _http._read_head

    def interrupted(*args: object, **kwargs: object) -> object:
        # A KeyboardInterrupt (or a greenlet's timeout) lands while the answer is awaited.
        raise KeyboardInterrupt

    monkeypatch.setattr(_http, "_read_head", interrupted)
    with pytest.raises(KeyboardInterrupt):
        poster.post(b"interrupted")
    monkeypatch.setattr(_http, "_read_head", read_head)
    answered.set()  # the first answer comes now, late, before the next request is read

    # The late 200 on the old connection must not be taken for this post's answer.
    assert poster.post(b"next").status == 201
    assert server.bodies_by_connection() == [[b"interrupted"], [b"next"]]


# Broken answers -----------------------------------------------------------------------------


MID_ANSWER = {
    "in the status line": b"HTTP/1.1 20",
    "in the headers": b"HTTP/1.1 200 OK\r\nContent-Le",
    "in a Content-Length body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..",
    "in a chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nhalf",
    "before the last chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
}


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
@pytest.mark.parametrize("where", list(MID_ANSWER))
def test_a_connection_closed_in_the_middle_of_an_answer_is_an_error_and_not_retried(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    where: str,
    reused: bool,
) -> None:
    def handle(conn: Conn) -> None:
        if reused:
            conn.read_request()
            conn.send(OK)
        conn.read_request()
        conn.send(MID_ANSWER[where])
        conn.sock.close()

    server = serve(handle)
    poster = make_poster(server.url)
    if reused:
        poster.post(b"first")

    with pytest.raises(HttpError):
        poster.post(b"second")

    # Part of an answer came back: the server had the request, which is not sent again.
    assert server.bodies()[-1:] == [b"second"]
    assert server.connections == 1


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
def test_an_answer_sent_before_the_body_was_read_is_the_answer(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster], reused: bool
) -> None:
    def handle(conn: Conn) -> None:
        if reused:
            conn.read_request()
            conn.send(OK)
        # A body over the server's limit: refused from its headers alone, and the connection
        # closed with most of the body unread (which resets it).
        while b"\r\n\r\n" not in conn.buffer:
            conn.buffer += conn.sock.recv(65536)
        conn.send(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n\r\n")
        conn.sock.close()

    server = serve(handle)
    poster = make_poster(server.url)
    if reused:
        poster.post(b"first")

    answer = poster.post(b"x" * (16 * 1024 * 1024))

    assert answer.status == 413
    assert server.connections == 1


def test_a_server_that_never_answers_is_an_error_after_the_timeout(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(answering_once(b"", Conn.hang))
    poster = make_poster(server.url, timeout_s=0.3)

    started = time.monotonic()
    with pytest.raises(HttpError):
        poster.post(b"lost")

    assert time.monotonic() - started < PROMPT_S
    assert server.bodies() == [b"lost"]
    assert server.connections == 1


@pytest.mark.parametrize(
    "start",
    [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
    ids=["headers", "content-length body", "chunk", "body to the end"],
)
def test_a_server_that_trickles_its_answer_is_an_error_after_the_timeout(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster], start: bytes
) -> None:
    def trickle(conn: Conn) -> None:
        conn.send(start)
        # One byte at a time, each well inside the timeout, for 10 s.
        for _ in range(200):
            if conn.server.stopping.wait(0.05):
                return
            conn.send(b"x")
        conn.hang()

    server = serve(answering_once(b"", trickle))
    poster = make_poster(server.url, timeout_s=0.3)

    started = time.monotonic()
    with pytest.raises(HttpError):
        poster.post(b"slow")

    assert time.monotonic() - started < PROMPT_S


def test_a_server_that_keeps_sending_100_continue_is_an_error_after_the_timeout(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    def continue_forever(conn: Conn) -> None:
        while not conn.server.stopping.wait(0.05):
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    server = serve(answering_once(b"", continue_forever))
    poster = make_poster(server.url, timeout_s=0.3)

    started = time.monotonic()
    with pytest.raises(HttpError):
        poster.post(b"body")

    assert time.monotonic() - started < PROMPT_S


def test_a_refused_port_is_an_error(make_poster: Callable[..., HttpPoster]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    poster = make_poster(f"http://127.0.0.1:{port}{PATH}")

    with pytest.raises(HttpError):
        poster.post(b"nobody")
    with pytest.raises(HttpError):
        poster.post(b"still nobody")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_failed_and_closed_connections_leave_no_file_descriptor_open(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    answers = [OK, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"garbage\r\n\r\n", b""]
    server = serve(lambda conn: answering_once(answers[conn.index % 4], close)(conn))
    with socket.create_server(("127.0.0.1", 0)) as probe:
        refused = make_poster(f"http://127.0.0.1:{probe.getsockname()[1]}{PATH}")
    poster = make_poster(server.url)
    for index in range(8):  # warm up: imports, the first connection's lazy allocations
        with contextlib.suppress(HttpError):
            poster.post(b"%d" % index)
    before = len(os.listdir("/proc/self/fd"))

    for index in range(200):
        with contextlib.suppress(HttpError):
            poster.post(b"%d" % index)
        with contextlib.suppress(HttpError):
            refused.post(b"%d" % index)
    poster.close()

    # The server's own sockets close in its threads: give them a moment.
    deadline = time.monotonic() + PROMPT_S
    while len(os.listdir("/proc/self/fd")) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) <= before
    assert server.connections >= 200


GARBAGE = {
    "another protocol": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "binary then close": bytes(range(256)) * 4,
    "a status that is not a number": b"HTTP/1.1 OK 200\r\nContent-Length: 0\r\n\r\n",
    "a four-digit status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "HTTP/2 preface": b"HTTP/2 200\r\ncontent-length: 0\r\n\r\n",
    "a header line without a colon": b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    "a chunk size that is not hex": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"
    ),
    "a negative Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "a Content-Length that is not a number": b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
    "a Content-Length with a sign": b"HTTP/1.1 200 OK\r\nContent-Length: +0\r\n\r\n",
    "a status in other digits": b"HTTP/1.1 \xb2\xb200 OK\r\nContent-Length: 0\r\n\r\n",
    "two different Content-Lengths": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 4\r\n\r\nokok"
    ),
    "chunk data longer than its size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokay\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_an_answer_that_is_not_http_is_an_error(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster], garbage: str
) -> None:
    server = serve(answering_once(GARBAGE[garbage], close))
    poster = make_poster(server.url)

    with pytest.raises(HttpError):
        poster.post(b"body")

    assert server.bodies() == [b"body"]


def test_headers_longer_than_the_limit_are_an_error_without_waiting_for_their_end(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    def endless_header(conn: Conn) -> None:
        conn.send(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 200_000)
        conn.hang()

    server = serve(answering_once(b"", endless_header))
    poster = make_poster(server.url, timeout_s=LONG_TIMEOUT_S)

    started = time.monotonic()
    with pytest.raises(HttpError):
        poster.post(b"body")

    assert time.monotonic() - started < PROMPT_S


@pytest.mark.parametrize("size", [70_000, 100_000, 126_000])
def test_a_head_over_the_limit_that_ends_in_the_last_read_is_an_error(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster], size: int
) -> None:
    # The limit is checked before each read; a head whose end comes in the read that crossed
    # it is measured once found.
    head = b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * size + b"\r\nContent-Length: 0\r\n\r\n"
    server = serve(answering(head))
    poster = make_poster(server.url)

    with pytest.raises(HttpError, match="too long"):
        poster.post(b"body")
    assert head[:-4] not in _http._parsed_heads


def test_many_short_header_lines_within_the_limit_are_read(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    headers = b"".join(b"X-Header-%d: %d\r\n" % (index, index) for index in range(2000))
    server = serve(answering(b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 0\r\n\r\n"))
    poster = make_poster(server.url)

    answer = poster.post(b"body")

    assert answer.headers["x-header-1999"] == "1999"
    assert len(answer.headers) == 2001


BIG = 2 * 1024 * 1024
OVERSIZED = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"z" * BIG,
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"10000\r\n" + b"z" * 0x10000 + b"\r\n" for _ in range(BIG // 0x10000))
        + b"0\r\n\r\n"
    ),
    "to the end of the connection": b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * BIG,
}


@pytest.mark.parametrize("framing", list(OVERSIZED))
def test_an_answer_body_over_the_cap_still_answers_and_the_connection_is_not_reused(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster], framing: str
) -> None:
    def handle(conn: Conn) -> None:
        # The body is sent and the connection kept open: a client that read to the end of a
        # body with no length, or reused the connection, would wait out its timeout.
        while conn.read_request() is not None:
            with contextlib.suppress(OSError):
                conn.send(OVERSIZED[framing])

    server = serve(handle)
    poster = make_poster(server.url, timeout_s=LONG_TIMEOUT_S)

    started = time.monotonic()
    statuses = [poster.post(b"first").status, poster.post(b"second").status]

    assert statuses == [200, 200]
    assert time.monotonic() - started < PROMPT_S
    assert server.connections == 2


def test_repeated_headers_are_joined_and_names_are_lower_case(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(
        answering(
            b"HTTP/1.1 429 Too Many Requests\r\n"
            b"X-Sentry-Rate-Limits: 60:transaction:organization\r\n"
            b"Retry-After:  30 \r\n"
            b"x-sentry-RATE-limits: 10:error\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
    )
    poster = make_poster(server.url)

    answer = poster.post(b"body")

    assert answer == HttpAnswer(
        429,
        {
            "x-sentry-rate-limits": "60:transaction:organization, 10:error",
            "retry-after": "30",
            "content-length": "0",
        },
    )


def test_a_folded_header_line_continues_the_value_before_it(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(
        answering(
            b"HTTP/1.1 429 Too Many Requests\r\n"
            b"X-Sentry-Rate-Limits: 60:transaction:organization,\r\n"
            b"  10:error\r\n"
            b"\t5:default\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
    )
    poster = make_poster(server.url)

    answer = poster.post(b"body")

    assert answer.headers == {
        "x-sentry-rate-limits": "60:transaction:organization, 10:error 5:default",
        "content-length": "0",
    }


# What goes on the wire ----------------------------------------------------------------------


def test_the_request_carries_the_target_host_port_length_and_headers_exactly(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(answering())
    poster = make_poster(
        f"http://127.0.0.1:{server.port}{PATH}?sentry_key=abc",
        headers={"User-Agent": "agent-trace/test", "X-Sentry-Auth": "Sentry sentry_key=abc"},
    )

    poster.post(b"\x00\xffbody", headers={"Content-Encoding": "gzip"})
    poster.post(b"")

    first, second = (request for _, request in server.requests)
    assert first.head == (
        b"POST /api/7/envelope/?sentry_key=abc HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"User-Agent: agent-trace/test\r\n"
        b"X-Sentry-Auth: Sentry sentry_key=abc\r\n"
        b"Content-Encoding: gzip\r\n"
        b"Content-Length: 6" % server.port
    )
    assert first.body == b"\x00\xffbody"
    assert second.header(b"content-length") == b"0"
    assert second.header(b"content-encoding") is None


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Sentry-Auth": "Sentry sentry_key=SECRET\r\nX-Forged: 1"},
        {"X-Sentry-Auth": "Sentry sentry_key=SECRET\nX-Forged: 1"},
        {"X-Forged\r\nX-Other": "SECRET"},
        {"X-Sentry-Auth:": "Sentry sentry_key=SECRET"},
        {"": "SECRET"},
        {"X-Euro": "SECRET \u20ac"},
    ],
    ids=[
        "CRLF in a value",
        "LF in a value",
        "CRLF in a name",
        "colon in a name",
        "no name",
        "not Latin-1",
    ],
)
def test_a_header_that_cannot_be_sent_as_given_is_refused_without_showing_its_value(
    headers: dict[str, str],
) -> None:
    with pytest.raises(ValueError) as refused:
        HttpPoster("http://127.0.0.1:9/", timeout_s=1.0, headers=headers)

    assert "SECRET" not in str(refused.value)


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("nan"), float("inf")])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        HttpPoster("http://127.0.0.1:9/", timeout_s=timeout_s, headers={})


def test_a_header_of_one_post_that_would_split_the_request_is_refused_before_sending(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(answering())
    poster = make_poster(server.url)

    with pytest.raises(ValueError):
        poster.post(b"body", headers={"X-Extra": "1\r\nX-Forged: 1"})
    poster.post(b"next")

    assert server.bodies() == [b"next"]
    assert server.requests[0][1].header(b"x-forged") is None


def test_spaces_and_non_ascii_in_the_path_are_escaped_and_escapes_kept(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(answering())
    poster = make_poster(f"http://127.0.0.1:{server.port}/api/\u00e4 b/?q=a%20b c")

    poster.post(b"body")

    assert server.requests[0][1].line == b"POST /api/%C3%A4%20b/?q=a%20b%20c HTTP/1.1"


# Proxies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target", "host"),
    [
        (
            "http://sentry.invalid:9000/api/1/envelope/",
            b"http://sentry.invalid:9000/api/1/envelope/",
            b"sentry.invalid:9000",
        ),
        ("http://sentry.invalid/api/1/", b"http://sentry.invalid/api/1/", b"sentry.invalid"),
        ("http://[::1]:9000/api/1/", b"http://[::1]:9000/api/1/", b"[::1]:9000"),
        ("http://[::1]/api/1/", b"http://[::1]/api/1/", b"[::1]"),
        (
            "http://b\u00fccher.invalid:9000/api/1/",
            b"http://xn--bcher-kva.invalid:9000/api/1/",
            b"xn--bcher-kva.invalid:9000",
        ),
    ],
    ids=["name and port", "default port", "IPv6 and port", "IPv6 default port", "IDN"],
)
def test_a_plain_http_proxy_from_the_environment_gets_the_absolute_target_and_credentials(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    target: bytes,
    host: bytes,
) -> None:
    # The proxy answers itself: nothing leaves 127.0.0.1, and no name is looked up.
    proxy = serve(answering())
    monkeypatch.setenv("http_proxy", f"http://agent:p%40ss%3Aword@127.0.0.1:{proxy.port}")
    poster = make_poster(url)

    assert poster.post(b"one").status == 200
    assert poster.post(b"two").status == 200

    [(_, request), _] = proxy.requests
    assert request.line == b"POST " + target + b" HTTP/1.1"
    assert request.header(b"host") == host
    assert request.header(b"proxy-authorization") == basic("agent", "p@ss:word")
    assert proxy.connections == 1


def test_a_proxy_url_without_credentials_sends_no_proxy_authorization(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = serve(answering())
    monkeypatch.setenv("HTTP_PROXY", f"127.0.0.1:{proxy.port}")
    poster = make_poster("http://sentry.invalid/api/1/")

    poster.post(b"one")

    [(_, request)] = proxy.requests
    assert request.line == b"POST http://sentry.invalid/api/1/ HTTP/1.1"
    assert request.header(b"proxy-authorization") is None


def test_no_proxy_sends_a_listed_host_past_the_proxy(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = serve(answering())
    origin = serve(answering())
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("no_proxy", "localhost, 127.0.0.1")
    poster = make_poster(origin.url)

    assert poster.post(b"direct").status == 200

    assert proxy.connections == 0
    assert origin.bodies() == [b"direct"]
    assert origin.requests[0][1].line == f"POST {PATH} HTTP/1.1".encode()


def test_no_proxy_may_name_the_host_with_its_port(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = serve(answering())
    origin = serve(answering())
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("no_proxy", f"127.0.0.1:{origin.port}")
    poster = make_poster(origin.url)

    poster.post(b"direct")

    assert proxy.connections == 0
    assert origin.bodies() == [b"direct"]


@pytest.mark.parametrize(
    ("variable", "url", "proxy_scheme"),
    [
        ("https_proxy", f"https://127.0.0.1{PATH}", "https"),
        ("http_proxy", f"http://127.0.0.1{PATH}", "https"),
        ("http_proxy", f"http://127.0.0.1{PATH}", "socks5"),
    ],
)
def test_a_proxy_spoken_to_in_another_protocol_is_refused_and_never_sent_its_credentials(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    url: str,
    proxy_scheme: str,
) -> None:
    proxy = serve(answering())
    monkeypatch.setenv(variable, f"{proxy_scheme}://agent:SECRET@127.0.0.1:{proxy.port}")
    poster = make_poster(url)

    with pytest.raises(HttpError) as refused:
        poster.post(b"body")

    assert "SECRET" not in str(refused.value)
    assert proxy.connections == 0


@pytest.mark.parametrize(
    "setting",
    ["http://agent:SECRET@127.0.0.1:port", "http://agent:SECRET@[::1", "http://agent:SECRET@:3128"],
    ids=["port not a number", "unclosed bracket", "no host"],
)
def test_a_proxy_setting_that_cannot_be_used_fails_each_post_and_never_goes_around_it(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
) -> None:
    origin = serve(answering())
    monkeypatch.setenv("http_proxy", setting)
    poster = make_poster(origin.url)

    with pytest.raises(HttpError) as refused:
        poster.post(b"body")

    assert "SECRET" not in str(refused.value)
    assert origin.connections == 0


def test_an_https_proxy_setting_does_not_apply_to_plain_http(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = serve(answering())
    origin = serve(answering())
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
    poster = make_poster(origin.url)

    poster.post(b"direct")

    assert proxy.connections == 0
    assert origin.bodies() == [b"direct"]


# TLS ----------------------------------------------------------------------------------------


def test_https_with_a_trusted_certificate_keeps_one_connection(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(answering(), tls=certificate.server_context())
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    poster = make_poster(f"https://localhost:{server.port}{PATH}")

    statuses = [poster.post(b"secret %d" % index).status for index in range(5)]

    assert statuses == [200] * 5
    assert server.bodies() == [b"secret %d" % index for index in range(5)]
    assert server.requests[0][1].header(b"host") == b"localhost:%d" % server.port
    assert server.connections == 1


def test_a_tls_connection_the_server_ended_while_idle_is_replaced(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = threading.Event()

    def end_tls(conn: Conn) -> None:
        # close_notify, then the TCP close; unwrap() would wait for the client's own
        # close_notify, which comes only when the client reads.
        conn.sock.settimeout(0.1)
        with contextlib.suppress(OSError):
            assert isinstance(conn.sock, ssl.SSLSocket)
            conn.sock.unwrap()
        conn.sock.close()
        closed.set()

    server = serve(answering_once(OK, end_tls), tls=certificate.server_context())
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    poster = make_poster(f"https://localhost:{server.port}{PATH}")
    poster.post(b"first")
    assert closed.wait(PROMPT_S)
    time.sleep(0.05)

    assert poster.post(b"second").status == 200
    assert server.bodies_by_connection() == [[b"first"], [b"second"]]


def test_https_to_a_plain_http_server_is_an_error(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(answering_once(b"HTTP/1.1 400 Bad Request\r\n\r\n", close))
    poster = make_poster(f"https://127.0.0.1:{server.port}{PATH}", timeout_s=0.3)

    with pytest.raises(HttpError):
        poster.post(b"secret")


def test_plain_http_to_a_tls_server_is_an_error(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    certificate: Certificate,
) -> None:
    server = serve(answering(), tls=certificate.server_context())
    poster = make_poster(server.url, timeout_s=0.3)

    with pytest.raises(HttpError):
        poster.post(b"body")

    assert server.bodies() == []


def test_an_untrusted_certificate_is_an_error_and_no_body_leaves(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    certificate: Certificate,
) -> None:
    server = serve(answering(), tls=certificate.server_context())
    poster = make_poster(f"https://127.0.0.1:{server.port}{PATH}")

    with pytest.raises(HttpError):
        poster.post(b"secret")

    assert server.bodies() == []


def test_https_goes_through_a_connect_tunnel_with_credentials(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin = serve(answering(), tls=certificate.server_context())
    proxy = serve(tunnelling_to(origin.port))
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    monkeypatch.setenv("https_proxy", f"http://agent:secret@127.0.0.1:{proxy.port}")
    poster = make_poster(f"https://localhost:{origin.port}{PATH}")

    statuses = [poster.post(b"through %d" % index).status for index in range(3)]

    assert statuses == [200] * 3
    [(_, connect)] = proxy.requests
    assert connect.line == b"CONNECT localhost:%d HTTP/1.1" % origin.port
    assert connect.header(b"proxy-authorization") == basic("agent", "secret")
    # The proxy saw only the tunnel request: the posts went inside the TLS it relayed.
    assert origin.bodies() == [b"through %d" % index for index in range(3)]
    assert proxy.connections == 1
    assert origin.connections == 1


def test_a_tunnel_to_a_host_the_certificate_does_not_name_is_an_error(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin = serve(answering(), tls=certificate.server_context())
    proxy = serve(tunnelling_to(origin.port))
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
    poster = make_poster(f"https://sentry.invalid:{origin.port}{PATH}")

    with pytest.raises(HttpError):
        poster.post(b"secret")

    assert origin.bodies() == []


@pytest.mark.parametrize(
    "refusal",
    [
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\nnope!",
        b"",
    ],
    ids=["407", "502 with a body", "closed unanswered"],
)
def test_a_refused_tunnel_is_an_error_without_a_second_attempt(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
    refusal: bytes,
) -> None:
    proxy = serve(answering_once(refusal, close))
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
    poster = make_poster(f"https://sentry.invalid{PATH}")

    with pytest.raises(HttpError):
        poster.post(b"secret")

    assert proxy.bodies() == [b""]
    assert proxy.requests[0][1].line == b"CONNECT sentry.invalid:443 HTTP/1.1"
    assert proxy.connections == 1


def test_a_proxy_that_trickles_its_tunnel_answer_is_an_error_after_the_timeout(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def trickle(conn: Conn) -> None:
        conn.send(b"HTTP/1.1 200 Connection established\r\n")
        for _ in range(200):
            if conn.server.stopping.wait(0.05):
                return
            conn.send(b"x")
        conn.hang()

    proxy = serve(answering_once(b"", trickle))
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
    poster = make_poster(f"https://sentry.invalid{PATH}", timeout_s=0.3)

    started = time.monotonic()
    with pytest.raises(HttpError):
        poster.post(b"secret")

    assert time.monotonic() - started < PROMPT_S


# close() and fork ---------------------------------------------------------------------------


def answer_first_then_hang(conn: Conn) -> None:
    conn.read_request()
    conn.send(OK)
    conn.read_request()
    conn.hang()


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
def test_close_from_another_thread_ends_a_blocked_post_at_once(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    background: concurrent.futures.ThreadPoolExecutor,
    reused: bool,
) -> None:
    server = serve(answer_first_then_hang if reused else answering_once(b"", Conn.hang))
    poster = make_poster(server.url, timeout_s=LONG_TIMEOUT_S)
    if reused:
        poster.post(b"first")
    blocked = background.submit(poster.post, b"blocked")
    server.wait_for_requests(2 if reused else 1)

    closing = background.submit(poster.close)

    closing.result(timeout=PROMPT_S)
    with pytest.raises(HttpError):
        blocked.result(timeout=PROMPT_S)
    # Nothing was sent again on a new connection after the close.
    assert server.connections == 1
    assert server.bodies()[-1:] == [b"blocked"]
    with pytest.raises(HttpError):
        poster.post(b"after close")


def test_close_from_another_thread_ends_a_post_waiting_for_its_tunnel(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    background: concurrent.futures.ThreadPoolExecutor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = serve(answering_once(b"", Conn.hang))
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
    poster = make_poster(f"https://sentry.invalid{PATH}", timeout_s=LONG_TIMEOUT_S)
    blocked = background.submit(poster.post, b"secret")
    proxy.wait_for_requests(1)

    closing = background.submit(poster.close)

    closing.result(timeout=PROMPT_S)
    with pytest.raises(HttpError):
        blocked.result(timeout=PROMPT_S)
    assert proxy.connections == 1


def test_close_from_another_thread_ends_a_post_whose_connection_is_not_accepted(
    make_poster: Callable[..., HttpPoster],
    background: concurrent.futures.ThreadPoolExecutor,
) -> None:
    # A listener whose accept queue is full drops new connections' SYNs: connect() waits,
    # as it does for a server behind a firewall that drops packets.
    with (
        socket.create_server(("127.0.0.1", 0), backlog=0) as listener,
        socket.create_connection(listener.getsockname()),
    ):
        probe = socket.socket()
        probe.settimeout(0.3)
        with probe, pytest.raises(TimeoutError):
            probe.connect(listener.getsockname())
        poster = make_poster(
            f"http://127.0.0.1:{listener.getsockname()[1]}{PATH}", timeout_s=LONG_TIMEOUT_S
        )
        blocked = background.submit(poster.post, b"never sent")
        time.sleep(0.2)  # lets the post reach connect(); a close before that ends it too

        closing = background.submit(poster.close)

        closing.result(timeout=PROMPT_S)
        with pytest.raises(HttpError):
            blocked.result(timeout=PROMPT_S)


def test_close_from_another_thread_ends_a_post_in_its_tls_handshake(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    background: concurrent.futures.ThreadPoolExecutor,
) -> None:
    # A server that accepts and says nothing: the client's handshake waits for its hello.
    server = serve(Conn.hang)
    poster = make_poster(f"https://127.0.0.1:{server.port}{PATH}", timeout_s=LONG_TIMEOUT_S)
    blocked = background.submit(poster.post, b"secret")
    time.sleep(0.2)  # lets the post reach the handshake; a close before that ends it too

    closing = background.submit(poster.close)

    closing.result(timeout=PROMPT_S)
    with pytest.raises(HttpError):
        blocked.result(timeout=PROMPT_S)
    assert server.connections == 1


def test_close_returns_at_once_while_a_post_waits_for_a_name_lookup(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    background: concurrent.futures.ThreadPoolExecutor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(answering())
    looking_up = threading.Event()
    answer_lookup = threading.Event()
    getaddrinfo = socket.getaddrinfo

    def slow_dns(host: object, *args: object, **kwargs: object) -> object:
        if host != "sentry.invalid":
            return getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]
        # A resolver that does not answer (the network is down): the lookup cannot be
        # interrupted, so it is held here until the test lets it go.
        looking_up.set()
        answer_lookup.wait(PROMPT_S)
        return getaddrinfo("127.0.0.1", server.port, type=socket.SOCK_STREAM)

    monkeypatch.setattr(socket, "getaddrinfo", slow_dns)
    poster = make_poster(f"http://sentry.invalid{PATH}", timeout_s=LONG_TIMEOUT_S)
    blocked = background.submit(poster.post, b"body")
    assert looking_up.wait(PROMPT_S)

    closing = background.submit(poster.close)

    try:
        closing.result(timeout=PROMPT_S / 2)
    finally:
        answer_lookup.set()
    with pytest.raises(HttpError):
        blocked.result(timeout=PROMPT_S)
    assert server.connections == 0


def test_close_between_the_set_up_of_a_connection_and_its_first_use_ends_the_post(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    background: concurrent.futures.ThreadPoolExecutor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(answering_once(b"", Conn.hang))
    poster = make_poster(server.url, timeout_s=LONG_TIMEOUT_S)
    connect = HttpPoster._connect

    def connect_then_close(self: HttpPoster, deadline: float) -> socket.socket:
        # close() lands in the narrowest window: the connection is set up and not yet
        # published as the poster's. It cannot finish (the post holds the lock): it is
        # enough that it has started.
        sock = connect(self, deadline)
        background.submit(self.close)
        while not self._closed:
            time.sleep(0.001)
        return sock

    monkeypatch.setattr(HttpPoster, "_connect", connect_then_close)

    started = time.monotonic()
    with pytest.raises(HttpError):
        poster.post(b"body")

    assert time.monotonic() - started < PROMPT_S
    assert server.bodies() == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_posts_on_its_own_connection_and_the_parents_keeps_working(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(answering())
    poster = make_poster(server.url)
    assert poster.post(b"parent before").status == 200

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if poster.post(b"child").status == 200 else 2
        finally:
            os._exit(code)
    exit_code = wait_for_child(pid)

    assert exit_code == 0
    assert poster.post(b"parent after").status == 200
    assert server.connections == 2
    assert server.bodies_by_connection() == [[b"parent before", b"parent after"], [b"child"]]


def wait_for_child(pid: int) -> int:
    """The child's exit code; a child still running after PROMPT_S is killed and fails."""
    deadline = time.monotonic() + PROMPT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child did not finish: blocked on the parent's lock?")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_while_a_parent_thread_waits_for_an_answer_posts_on_its_own(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    background: concurrent.futures.ThreadPoolExecutor,
) -> None:
    release = threading.Event()

    def handle(conn: Conn) -> None:
        if conn.index == 0:
            conn.read_request()
            conn.send(OK)
            conn.read_request()
            release.wait(PROMPT_S)
            conn.send(OK)
        answering()(conn)

    server = serve(handle)
    poster = make_poster(server.url)
    poster.post(b"parent before")
    waiting = background.submit(poster.post, b"parent waiting")
    server.wait_for_requests(2)

    # The fork comes while the parent's thread holds the poster's lock in the middle of a
    # request, as an export thread would.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if poster.post(b"child").status == 200 else 2
        finally:
            os._exit(code)
    exit_code = wait_for_child(pid)
    release.set()

    assert exit_code == 0
    assert waiting.result(timeout=PROMPT_S).status == 200
    assert poster.post(b"parent after").status == 200
    assert server.bodies_by_connection() == [
        [b"parent before", b"parent waiting", b"parent after"],
        [b"child"],
    ]


def test_the_module_trusts_what_its_tls_context_trusts(
    serve: Callable[..., Server],
    make_poster: Callable[..., HttpPoster],
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(answering(), tls=certificate.server_context())
    monkeypatch.setattr(
        _http, "_tls_context", lambda: ssl.create_default_context(cafile=str(certificate.cert))
    )
    poster = make_poster(f"https://127.0.0.1:{server.port}{PATH}")

    assert poster.post(b"secret").status == 200


# Posting a group: pipelined requests ---------------------------------------------------------


def numbered_answer(request: Request) -> bytes:
    """An answer that says which request it answers: its status is 200 + the body's number."""
    number = int(request.body.split()[-1])
    return f"HTTP/1.1 {200 + number} OK\r\nContent-Length: 0\r\n\r\n".encode()


def reading_everything_first(count: int) -> Handler:
    """Reads `count` requests before it answers any: they must all have come in one go."""

    def handle(conn: Conn) -> None:
        while True:
            requests = [conn.read_request() for _ in range(count)]
            if any(request is None for request in requests):
                return
            conn.send(b"".join(numbered_answer(r) for r in requests if r is not None))

    return handle


def answered(answers: list[HttpAnswer | HttpError]) -> list[HttpAnswer]:
    assert all(isinstance(answer, HttpAnswer) for answer in answers), answers
    return [answer for answer in answers if isinstance(answer, HttpAnswer)]


def statuses(answers: list[HttpAnswer | HttpError]) -> list[int]:
    return [answer.status for answer in answered(answers)]


def bodies(count: int, start: int = 0) -> list[bytes]:
    return [f"body {index}".encode() for index in range(start, start + count)]


def test_a_group_is_written_before_any_answer_is_read_and_answered_in_order(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    # A server that answers nothing until it holds all 20 requests would leave a poster
    # that waits for each answer before the next request hanging until its timeout.
    server = serve(reading_everything_first(20))
    poster = make_poster(server.url, timeout_s=LONG_TIMEOUT_S)

    started = time.monotonic()
    answers = poster.post_many(bodies(20))
    answers += poster.post_many(bodies(20, start=20))

    assert time.monotonic() - started < PROMPT_S
    assert statuses(answers) == [200 + index for index in range(40)]
    assert server.connections == 1
    assert server.bodies() == bodies(40)


def test_answers_split_anywhere_across_reads_are_matched_to_their_requests(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    # Every framing, the next answer starting in the same segment as the end of the last.
    framings = [
        b"HTTP/1.1 201 OK\r\nContent-Length: 5\r\n\r\nfirst",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 9\r\nContent-Length: 2\r\n\r\n{}",
    ]

    def handle(conn: Conn) -> None:
        for _ in framings:
            conn.read_request()
        conn.send_bytewise(b"".join(framings)[:70])
        conn.send(b"".join(framings)[70:])
        answering()(conn)

    server = serve(handle)
    poster = make_poster(server.url)

    answers = poster.post_many(bodies(4))

    assert [(a.status, a.headers.get("retry-after")) for a in answered(answers)] == [
        (201, None),
        (202, None),
        (204, None),
        (429, "9"),
    ]
    # Nothing was left over: the connection carries the next request.
    assert poster.post(b"next").status == 200
    assert server.connections == 1


def test_answers_with_the_same_head_share_its_parse_and_others_are_never_mixed_up(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    # Heads are parsed once and kept by their bytes: a head that differs by one header
    # (a rate limit's length, a server's sequence number) is an answer of its own.
    limits = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 9\r\nContent-Length: 0\r\n\r\n",
    ]
    script = [limits[index % 3] for index in range(30)] + [
        f"HTTP/1.1 200 OK\r\nX-Seq: {index}\r\nContent-Length: 0\r\n\r\n".encode()
        for index in range(200)
    ]

    def handle(conn: Conn) -> None:
        for answer in script:
            if conn.read_request() is None:
                return
            conn.send(answer)

    server = serve(handle)
    poster = make_poster(server.url)

    answers = answered(poster.post_many(bodies(30)))
    for start in range(0, 200, 25):
        answers += answered(poster.post_many(bodies(25, start=start)))

    expected = [(200, None), (429, "5"), (429, "9")] * 10
    assert [(a.status, a.headers.get("retry-after")) for a in answers[:30]] == expected
    assert [a.headers["x-seq"] for a in answers[30:]] == [str(index) for index in range(200)]
    # The parsed heads kept stay bounded, however many different heads a server sends.
    assert len(_http._parsed_heads) <= _http._PARSED_HEADS_MAX


def test_requests_after_an_announced_close_go_again_on_a_new_connection(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    def handle(conn: Conn) -> None:
        if conn.index == 0:
            # Reads the whole group, answers two and says it closes: the rest it never
            # processed, as HTTP requires of a server that announces a close.
            requests = [conn.read_request() for _ in range(5)]
            first, second = requests[0], requests[1]
            assert first is not None and second is not None
            conn.send(numbered_answer(first))
            conn.send(
                numbered_answer(second).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            )
            conn.sock.close()
            return
        while (request := conn.read_request()) is not None:
            conn.send(numbered_answer(request))

    server = serve(handle)
    poster = make_poster(server.url)

    answers = poster.post_many(bodies(5))

    assert statuses(answers) == [200, 201, 202, 203, 204]
    by_connection = server.bodies_by_connection()
    assert by_connection[0] == bodies(5)
    assert by_connection[1] == bodies(3, start=2)
    assert server.connections == 2


def test_a_server_that_drops_pipelined_requests_gets_them_one_at_a_time(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    def handle(conn: Conn) -> None:
        # Answers the first request of what arrived and closes without a word, as a
        # server or proxy that does not keep pipelined requests does.
        request = conn.read_request()
        if request is None:
            return
        conn.send(numbered_answer(request))
        conn.sock.close()

    server = serve(handle)
    poster = make_poster(server.url)

    answers = poster.post_many(bodies(4))
    later = poster.post_many(bodies(3, start=4))

    assert statuses(answers + later) == [200 + n for n in range(7)]
    # After the first connection, one request per connection: the poster stopped pipelining.
    by_connection = server.bodies_by_connection()
    assert by_connection[0][0] == b"body 0"
    assert by_connection[1:] == [[body] for body in bodies(6, start=1)]


def test_a_kept_alive_connection_closed_while_idle_takes_the_group_on_a_new_one(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    def handle(conn: Conn) -> None:
        if conn.index == 0:
            conn.read_request()
            conn.send(OK)
            # Idle timer: closed as the group arrives, nothing answered.
            while b"\r\n\r\n" not in conn.buffer:
                if not conn._fill():
                    break
            conn.sock.close()
            return
        while (request := conn.read_request()) is not None:
            conn.send(numbered_answer(request))

    server = serve(handle)
    poster = make_poster(server.url)
    assert poster.post(b"first").status == 200

    answers = poster.post_many(bodies(3))

    assert statuses(answers) == [200, 201, 202]
    assert server.bodies_by_connection()[1] == bodies(3)
    # Still pipelining: the group of the next call arrives on the second connection at once.
    assert statuses(poster.post_many(bodies(2, start=3))) == [203, 204]
    assert server.connections == 2


def test_a_group_the_server_never_answers_is_an_error_for_each_after_the_timeout(
    serve: Callable[..., Server], make_poster: Callable[..., HttpPoster]
) -> None:
    server = serve(lambda conn: conn.hang())
    poster = make_poster(server.url, timeout_s=0.3)

    started = time.monotonic()
    answers = poster.post_many(bodies(5))

    assert time.monotonic() - started < PROMPT_S
    assert len(answers) == 5
    assert all(isinstance(answer, HttpError) for answer in answers)


def test_a_group_to_a_refused_port_is_an_error_for_each(
    make_poster: Callable[..., HttpPoster],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    poster = make_poster(f"http://127.0.0.1:{port}{PATH}")

    answers = poster.post_many(bodies(3))

    assert len(answers) == 3
    assert all(isinstance(answer, HttpError) for answer in answers)
