"""One kept-alive HTTP/1.1 connection that posts bodies and reads the short answers to them.

The Sentry envelope sink makes one request per transaction (an envelope holds one), so the
cost of a request is the cost of the sink. Measured on loopback with 3.6 KB bodies, CPU per
request: sentry-sdk's urllib3 transport 410-520 us, `http.client` 120-160 us (most of it in
parsing the answer's headers with the email package), a socket and the parser 15-16 us
(the poll of the idle connection and the request's deadline included). `post_many` pipelines
a group of requests (one write, then the answers in order): with 32 requests a group, a third
of the CPU and half the wall time of posting them one by one, and one wake-up of the export
thread instead of 32, each of which waits for the application to hand back the GIL.

Only what a POST to an ingestion endpoint needs: answers with a length, in chunks or up to
the connection's end; `1xx` answers skipped; a kept-alive connection that the server closed
(or sent bytes on) while idle is replaced before it is written to, and a request that one
closes on before a byte of its answer is sent once more, on a new connection; an answer sent
before the server read the whole request (a 413) and closed is still read; proxies from the
environment (`https_proxy`, `http_proxy`, `no_proxy`), as `requests` and sentry-sdk honour
them, when they are http:// proxies (for an https:// or SOCKS one every request is an
HttpError). Bodies of answers are read and thrown away.
"""

from __future__ import annotations

import base64
import contextlib
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

from agent_trace._fork import reset_in_forked_child

__all__ = ["HttpAnswer", "HttpError", "HttpPoster"]

# An answer's headers longer than this are no ingestion endpoint's: the connection is given up.
_MAX_HEAD = 64 * 1024
# Answer bodies are discarded; one longer than this is not read, and the connection is closed.
_MAX_BODY = 1024 * 1024
_READ = 64 * 1024
_HEX_DIGITS = b"0123456789abcdefABCDEF"
# A socket's timeout is reset only when it is further than this from a request's time left.
_SLACK_S = 0.01
# A socket's timeout must fit the platform's time_t: an infinite one raises OverflowError.
_MAX_TIMEOUT_S = 86_400.0
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class HttpError(Exception):
    """The request got no answer: refused, reset, timed out, the answer was not HTTP, the
    poster was closed, or the proxy the environment names cannot be used."""


class _Stale(Exception):
    """A reused connection turned out closed before any byte of the answer came back."""


class HttpAnswer(NamedTuple):
    status: int
    # Lower-case names; repeated headers joined with ", ". Shared by answers with the same
    # head: not to be changed.
    headers: dict[str, str]


class HttpPoster:
    """Posts to one URL over one connection at a time, opened on first use and kept alive.

    Thread-safe (one request at a time); after a fork the child opens a connection of its own
    and never writes into the parent's. `timeout_s` bounds a request as a whole: connecting,
    a proxy's tunnel, sending and the answer, the retry on a new connection included (each
    read of a TLS handshake, not all of them together, and not a name lookup).

    Raises ValueError for a URL that is not http(s), a timeout that is not a positive number
    of seconds (a day at most), and a header whose name is not an HTTP token or whose value
    holds a line break or is not Latin-1 text: such a header would end its line early and
    forge the rest of the request.
    """

    def __init__(self, url: str, *, timeout_s: float, headers: Mapping[str, str]) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
        if not 0 < timeout_s <= _MAX_TIMEOUT_S:
            raise ValueError(f"timeout_s must be above 0 and at most a day, not {timeout_s!r}")
        self._https = parts.scheme == "https"
        # A name outside ASCII goes on the wire (Host, a proxy's target, TLS) in IDNA form.
        hostname = parts.hostname
        self._host = hostname if hostname.isascii() else hostname.encode("idna").decode("ascii")
        self._port = parts.port or (443 if self._https else 80)
        default_port = self._port == (443 if self._https else 80)
        host_header = f"[{self._host}]" if ":" in self._host else self._host
        if not default_port:
            host_header = f"{host_header}:{self._port}"
        self._timeout_s = timeout_s
        self._proxy = _proxy_for(parts.scheme, self._host, self._port)
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        # Spaces, line breaks and non-ASCII characters are escaped; escapes already there stay.
        target = urllib.parse.quote(target, safe="/?&=%:@!$'()*+,;~")
        fields = {"Host": host_header}
        if self._proxy is not None and not self._https:
            # A plain-HTTP proxy takes the whole URL as the target, and its credentials here.
            target = f"{parts.scheme}://{host_header}{target}"
            if self._proxy.authorization:
                fields["Proxy-Authorization"] = self._proxy.authorization
        self._head = f"POST {target} HTTP/1.1\r\n".encode("ascii") + _header_lines(fields)
        self._head += _header_lines(headers)
        self._tls: ssl.SSLContext | None = _tls_context() if self._https else None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        # Polls the kept-alive connection for anything that arrived while it was idle.
        self._idle_poll: select.poll | None = None
        # The socket of a connection being set up (connect, tunnel, TLS handshake): close()
        # shuts it down to wake the request waiting on it.
        self._opening: socket.socket | None = None
        self._closed = False
        # Off for good once a connection ended part-way through pipelined requests.
        self._pipelining = True
        reset_in_forked_child(self, HttpPoster._after_fork)

    def _after_fork(self) -> None:
        # The parent's export thread may have held the lock at the fork, in the middle of a
        # request: the child gets a lock and, at its first request, a connection of its own.
        # Closing the child's copy of the socket leaves the parent's connection open.
        self._lock = threading.Lock()
        self._drop()
        opening, self._opening = self._opening, None
        if opening is not None:
            with contextlib.suppress(OSError):
                opening.close()

    def post(self, body: bytes, headers: Mapping[str, str] | None = None) -> HttpAnswer:
        """Send `body`; the answer's status and headers, or HttpError.

        `headers` are sent after the poster's own; ValueError for one that cannot be sent as
        given (see the class).
        """
        extra = _header_lines(headers) if headers else b""
        data = self._request(body, extra)
        with self._lock:
            if self._closed:
                # A close() that came as the last request ended may have left it the socket.
                self._drop()
                raise HttpError("the connection is closed")
            # The timeout bounds the whole request, retry included: a server that trickles
            # its answer a byte at a time cannot hold the export thread past it.
            deadline = time.monotonic() + self._timeout_s
            with self._guarded():
                return self._post_one(data, deadline)

    def post_many(self, bodies: Sequence[bytes]) -> list[HttpAnswer | HttpError]:
        """Post each body; the answers in order, an HttpError for each that got none.

        The requests are pipelined (RFC 9112, section 9.3.2): written together on the
        kept-alive connection, and their answers read in order, so a few dozen small requests
        cost one write, a read or two and one wake-up of this thread instead of one each.
        The timeout bounds the whole group. When the server announces a close part-way, the
        requests after it go again on a new connection; when a connection ends part-way
        without a word, the rest go one at a time and the poster stops pipelining (a server
        or proxy that does not keep pipelined requests). A request re-sent that way may have
        reached the server before: Sentry drops a transaction it already has by event id.
        """
        requests = [self._request(body) for body in bodies]
        results: list[HttpAnswer | HttpError] = []
        with self._lock:
            if self._closed:
                self._drop()
                return [HttpError("the connection is closed")] * len(requests)
            deadline = time.monotonic() + self._timeout_s
            try:
                with self._guarded():
                    retried = False
                    while len(requests) - len(results) > 1 and self._pipelining:
                        answers: list[HttpAnswer] = []
                        try:
                            end = self._pipeline(requests[len(results) :], deadline, answers)
                        finally:
                            results.extend(answers)
                        if len(results) == len(requests):
                            break
                        if end == "closed" or (end == "stale" and not retried):
                            retried = retried or end == "stale"
                            self._raise_if_closed()
                            continue
                        self._pipelining = False
                    while len(results) < len(requests):
                        results.append(self._post_one(requests[len(results)], deadline))
            except HttpError as exc:
                results.append(exc)
            unsent = HttpError("not sent: an earlier request of the group got no answer")
            results.extend(unsent for _ in range(len(requests) - len(results)))
        return results

    def _request(self, body: bytes, extra: bytes = b"") -> bytes:
        return b"".join((self._head, extra, b"Content-Length: %d\r\n\r\n" % len(body), body))

    def _post_one(self, data: bytes, deadline: float) -> HttpAnswer:
        """One request on the connection (the lock held), retried once on a new connection
        when the kept-alive one turns out closed."""
        try:
            return self._exchange(data, deadline)
        except _Stale:
            # The server closed the kept-alive connection as the request reached it (its
            # idle timer ran out) without a byte of answer: once more, on a new one, unless
            # the end came from close() shutting the connection down.
            self._drop()
            if self._closed:
                raise HttpError("the poster was closed during the request") from None
            # A new connection is never stale: this raises HttpError, not _Stale.
            return self._exchange(data, deadline)

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """What every request runs under (the lock held): failures become HttpError, and
        a connection left in an unknown state is dropped."""
        try:
            yield
        except HttpError:
            self._drop()
            raise
        except (OSError, ValueError) as exc:
            self._drop()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            # Interrupted (KeyboardInterrupt, a greenlet's timeout) with the answer not
            # read: it would arrive late and pass for the next request's.
            self._drop()
            raise
        finally:
            if self._closed:
                # close() came during this request and left the connection to it.
                self._drop()

    def close(self) -> None:
        """Close the connection; a request blocked on it, or on setting it up, fails at once.

        Returns at once, also while a request waits for a name lookup (which nothing can
        interrupt): that request fails when the lookup ends, without connecting.
        """
        self._closed = True
        # Wakes a thread blocked in connect(), recv() or a handshake on either socket, which
        # close() alone does not. A request publishes its new socket before it looks at
        # _closed, this reads the sockets after setting it: one of the two sees the other.
        for sock in (self._sock, self._opening):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        # A running request drops the connection itself when it sees _closed: waiting for
        # its lock here would hold the caller (a shutdown) for as long as a lookup takes.
        if self._lock.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._lock.release()

    def _drop(self) -> None:
        self._idle_poll = None
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _connect(self, deadline: float) -> socket.socket:
        try:
            sock = self._open(deadline)
            try:
                # Headers and body leave in one write; the answer must not wait for a
                # delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._proxy is not None and self._https:
                    self._tunnel(sock, self._proxy, deadline)
                if self._tls is not None:
                    sock = self._opening = self._tls.wrap_socket(
                        sock, server_hostname=self._host, do_handshake_on_connect=False
                    )
                    self._raise_if_closed()
                    # Each of the handshake's reads may wait this long, not all of them.
                    _limit(sock, deadline)
                    sock.do_handshake()
            except BaseException:
                sock.close()
                raise
            return sock
        finally:
            self._opening = None

    def _open(self, deadline: float) -> socket.socket:
        """A socket connected to the first address of the server (or proxy) that accepts."""
        proxy = self._proxy
        if proxy is not None and proxy.refusal is not None:
            raise HttpError(proxy.refusal)
        host, port = (proxy.host, proxy.port) if proxy is not None else (self._host, self._port)
        failure: Exception = HttpError(f"no address for {host}")
        for family, kind, protocol, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        ):
            sock = self._opening = socket.socket(family, kind, protocol)
            try:
                _limit(sock, deadline)
                self._raise_if_closed()
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                failure = exc
            except BaseException:
                sock.close()
                raise
        self._raise_if_closed()
        raise failure

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise HttpError("the poster is closed")

    def _tunnel(self, sock: socket.socket, proxy: _Proxy, deadline: float) -> None:
        authority = f"[{self._host}]" if ":" in self._host else self._host
        authority = f"{authority}:{self._port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        _limit(sock, deadline)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, _, _, rest = _read_head(sock, b"", deadline, reused=False)
        if status != 200 or rest:
            raise HttpError(f"the proxy refused the tunnel (HTTP {status})")

    def _connection(self, deadline: float) -> tuple[socket.socket, bool]:
        """The kept-alive connection, or a new one; and whether it is new."""
        if self._idle_poll is not None and self._idle_poll.poll(0):
            # Readable while idle: the server closed the connection, or sent what no request
            # asked for (a 408 before closing, a body longer than it said). An answer read
            # from it would not be this request's: the request goes on a new connection.
            self._drop()
        sock = self._sock
        if sock is not None:
            return sock, False
        sock = self._sock = self._connect(deadline)
        # A close() after the set-up and before this saw neither socket to shut down.
        self._raise_if_closed()
        self._idle_poll = select.poll()
        self._idle_poll.register(sock, select.POLLIN)
        return sock, True

    def _exchange(self, request: bytes, deadline: float) -> HttpAnswer:
        sock, fresh = self._connection(deadline)
        try:
            # sendall() takes its timeout for the whole body, not for each write.
            _limit(sock, deadline)
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            # A server may answer before it has read the whole request (a 413 for a body
            # over its limit) and close: the answer is still there to be read.
            answer = _answer_left(sock, deadline)
            if answer is not None:
                self._drop()
                return answer
            if fresh:
                raise
            raise _Stale from None
        status, version, headers, buffer = _read_head(sock, b"", deadline, reused=not fresh)
        while 100 <= status < 200:
            # `100 Continue` and the like come before the real answer. The server has the
            # request now: a close from here on is an error, never a stale connection.
            status, version, headers, buffer = _read_head(sock, buffer, deadline, reused=False)
        rest = _read_body(sock, status, headers, buffer, deadline)
        # Nothing may follow an answer we did not ask for: such a connection is not reused.
        if rest != b"" or not _keeps_alive(version, headers):
            self._drop()
        return HttpAnswer(status, headers)

    def _pipeline(
        self, requests: Sequence[bytes], deadline: float, answers: list[HttpAnswer]
    ) -> str:
        """Write `requests` at once, then read their answers into `answers`, in order.

        Returns "done" when each got its answer, "closed" when the server announced it would
        close the connection after the last answer read (it processes none of the requests
        after it: RFC 9112, section 9.6), "stale" when a reused connection ended before any
        answer, "ended" when the connection ended without a word after some.
        """
        sock, fresh = self._connection(deadline)
        _limit(sock, deadline)
        # The answers (a few hundred bytes each, a group is a few dozen) fit in the sockets'
        # buffers: the server cannot stall writing them while this still writes requests.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # A server that closed part-way may have answered the first requests: read on.
            sock.sendall(b"".join(requests))
        buffer = b""
        for _ in requests:
            try:
                status, version, headers, buffer = _read_head(sock, buffer, deadline, reused=True)
            except (_Stale, ConnectionResetError):
                self._drop()
                return "stale" if not fresh and not answers else "ended"
            while 100 <= status < 200:
                status, version, headers, buffer = _read_head(sock, buffer, deadline, reused=False)
            rest = _read_body(sock, status, headers, buffer, deadline)
            answers.append(HttpAnswer(status, headers))
            if rest is None or not _keeps_alive(version, headers):
                self._drop()
                return "done" if len(answers) == len(requests) else "closed"
            buffer = rest
        if buffer:
            self._drop()  # bytes no request asked for
        return "done"


def _answer_left(sock: socket.socket, deadline: float) -> HttpAnswer | None:
    """The final answer a server sent before it closed the connection, if it sent one."""
    try:
        status, _, headers, _ = _read_head(sock, b"", deadline, reused=False)
    except (OSError, HttpError):
        return None
    return HttpAnswer(status, headers) if status >= 200 else None


def _header_lines(headers: Mapping[str, str]) -> bytes:
    """`headers` as request lines; ValueError for one that would break the request (naming
    it, never showing its value, which may be a credential: X-Sentry-Auth)."""
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"cannot send the header {name!r}: its name is not an HTTP token")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"cannot send the header {name!r}: its value holds a line break")
        try:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        except UnicodeEncodeError:
            raise ValueError(f"cannot send the header {name!r}: its value is not Latin-1") from None
    return b"".join(lines)


def _read_head(
    sock: socket.socket, buffer: bytes, deadline: float, *, reused: bool
) -> tuple[int, str, dict[str, str], bytes]:
    """Status, HTTP version and headers of the next answer, and the bytes read past them.

    _Stale when `reused` and the connection ends before the first byte of the answer.
    """
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(buffer) > _MAX_HEAD:
            raise HttpError("the answer's headers are too long")
        try:
            chunk = _recv(sock, deadline)
        except ConnectionResetError:
            if buffer or not reused:
                raise
            raise _Stale from None
        if not chunk:
            if buffer or not reused:
                raise HttpError("the connection closed before the end of an answer")
            raise _Stale
        buffer += chunk
    if end > _MAX_HEAD:
        # Checked before each read too, but a last read may have brought the rest of a head
        # twice the limit.
        raise HttpError("the answer's headers are too long")
    head = buffer[:end]
    parsed = _parsed_heads.get(head)
    if parsed is None:
        parsed = _parse_head(head)
        if end <= _CACHED_HEAD_MAX:
            if len(_parsed_heads) >= _PARSED_HEADS_MAX:
                _parsed_heads.clear()
            _parsed_heads[head] = parsed
    return parsed[0], parsed[1], parsed[2], buffer[end + 4 :]


# Answers' heads as parsed, by their bytes: a server answers a run of requests with the same
# head (a Date header changes it once a second), and parsing one costs more than its request.
# The headers dicts are shared: answers are read, never changed.
_parsed_heads: dict[bytes, tuple[int, str, dict[str, str]]] = {}
_PARSED_HEADS_MAX = 64
# Heads longer than this (a few hundred bytes is usual) are parsed each time, not kept.
_CACHED_HEAD_MAX = 2048


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if (
        version not in ("HTTP/1.0", "HTTP/1.1")
        or not _is_number(code)
        or rest[3:4] not in ("", " ")
    ):
        raise HttpError("the answer is not HTTP/1.x")
    headers: dict[str, str] = {}
    key = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and key:
            # An obsolete folded line continues the previous header's value (RFC 9112 5.2).
            headers[key] = f"{headers[key]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise HttpError("a malformed header line in the answer")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(code), version, headers


def _read_body(
    sock: socket.socket, status: int, headers: dict[str, str], buffer: bytes, deadline: float
) -> bytes | None:
    """Read and discard the answer's body; the bytes read past it (the start of the next
    answer when requests were pipelined), or None when the connection cannot be reused."""
    if status in (204, 304):
        return buffer
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _read_chunks(sock, buffer, deadline)
    length_text = headers.get("content-length")
    if length_text is not None:
        # Repeated fields were joined: they must all say the same, or the answer's end is
        # unknown and so is where the next one would start.
        if "," in length_text:
            values = {value.strip() for value in length_text.split(",")}
            length_text = values.pop() if len(values) == 1 else ""
        if not _is_number(length_text):
            raise HttpError("a malformed Content-Length in the answer")
        length = int(length_text)
        if length > _MAX_BODY:
            return None
        left = length - len(buffer)
        while left > 0:
            buffer = _recv_some(sock, deadline)
            left -= len(buffer)
        return buffer[len(buffer) + left :] if left < 0 else b""
    # No length: the body runs to the connection's end.
    read = len(buffer)
    while read <= _MAX_BODY:
        chunk = _recv(sock, deadline)
        if not chunk:
            break
        read += len(chunk)
    return None


def _read_chunks(sock: socket.socket, buffer: bytes, deadline: float) -> bytes | None:
    """Read and discard a chunked body; as `_read_body`."""
    total = 0
    while True:
        line, buffer = _read_line(sock, buffer, deadline)
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(_HEX_DIGITS):
            raise HttpError("a malformed chunk size in the answer")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > _MAX_BODY:
            return None
        # A chunk's data is dropped as it arrives: only its size line is held whole.
        while len(buffer) < size:
            size -= len(buffer)
            buffer = _recv_some(sock, deadline)
        end, buffer = _read_line(sock, buffer[size:], deadline)
        if end:
            raise HttpError("a chunk in the answer is longer than its size")
    # Trailer fields, if any, end with an empty line.
    while True:
        trailer, buffer = _read_line(sock, buffer, deadline)
        if not trailer:
            return buffer


def _read_line(sock: socket.socket, buffer: bytes, deadline: float) -> tuple[bytes, bytes]:
    """The next line of a chunked body without its CRLF, and the bytes after it."""
    while True:
        end = buffer.find(b"\r\n")
        if end >= 0:
            return buffer[:end], buffer[end + 2 :]
        if len(buffer) > _MAX_HEAD:
            raise HttpError("a line of a chunked answer is too long")
        buffer += _recv_some(sock, deadline)


def _recv_some(sock: socket.socket, deadline: float) -> bytes:
    chunk = _recv(sock, deadline)
    if not chunk:
        raise HttpError("the connection closed in the middle of an answer")
    return chunk


def _recv(sock: socket.socket, deadline: float) -> bytes:
    """The next bytes from `sock` (b"" at the connection's end), waiting until `deadline`."""
    _limit(sock, deadline)
    return sock.recv(_READ)


def _limit(sock: socket.socket, deadline: float) -> None:
    """Make the next wait on `sock` end at `deadline` (give or take _SLACK_S)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise HttpError("no answer within the timeout")
    # settimeout() costs a system call: the previous wait's timeout stays while it is close
    # to the time left, which on a fast connection is most of the time.
    timeout = sock.gettimeout()
    if timeout is None or abs(timeout - left) > _SLACK_S:
        sock.settimeout(left)


def _is_number(text: str) -> bool:
    # str.isdigit() alone takes "²" and other digits that int() refuses.
    return text.isascii() and text.isdigit()


def _keeps_alive(version: str, headers: Mapping[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


class _Proxy(NamedTuple):
    host: str
    port: int
    authorization: str | None
    # Why the proxy cannot be used (a scheme other than http://), or None.
    refusal: str | None


def _proxy_for(scheme: str, host: str, port: int) -> _Proxy | None:
    """The proxy the environment names for `scheme`, unless `no_proxy` exempts `host`."""
    proxies = urllib.request.getproxies()
    url = proxies.get(scheme)
    if not url:
        return None
    # `no_proxy` may name a host, or a host and port.
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if urllib.request.proxy_bypass(host) or urllib.request.proxy_bypass(authority):
        return None
    if "://" not in url:
        url = f"http://{url}"
    # A setting that cannot be used makes every request fail, never go around the proxy or
    # fail the construction: the environment is not the caller's to fix. Messages never
    # show the setting, which may hold credentials.
    setting = f"the {scheme}_proxy setting"
    try:
        parts = urllib.parse.urlsplit(url)
        proxy_port = parts.port or 80
    except ValueError:
        return _Proxy("", 0, None, f"{setting} is not a URL with a valid port")
    if not parts.hostname:
        return _Proxy("", 0, None, f"{setting} names no host")
    refusal = None
    if parts.scheme != "http":
        # TLS to the proxy (or SOCKS) is not spoken here. Talking plain HTTP to it instead
        # would send its credentials in the clear: no connection is made at all.
        refusal = f"{setting} names a {parts.scheme}:// proxy; only http:// proxies are supported"
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return _Proxy(parts.hostname, proxy_port, authorization, refusal)


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    try:
        # The same roots sentry-sdk trusts (certifi is one of its dependencies), beside the
        # system's.
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    return context
