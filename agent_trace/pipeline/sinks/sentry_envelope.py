"""Finished spans as Sentry transactions: one per local root, its descendants as spans.

Children usually end before their parent, so the sink parks each finished span's subtree under
its parent's id until that parent ends; a span with no local parent closes a transaction. A
subtree whose parent never arrives (a span left open, a background task outliving its
request) is sent as a transaction of its own at the next flush or, the one idle longest first,
when the parking area is full: it keeps its `parent_span_id`, so Sentry still places it in
the trace.

A span is converted to the JSON of a Sentry span when it parks, and a transaction is written
as JSON text around its children's: building dicts for `json.dumps` cost twice as much. The
envelopes are posted by the sink itself on its export thread (`_http.HttpPoster`), a group at
a time, pipelined on one kept-alive connection: sentry-sdk's transport made one urllib3
request per envelope on a thread of its own, about 580 us of CPU each, more than the OTLP
sink spends on a whole transaction's spans (see BENCHMARKS.md).
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import logging
import math
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from agent_trace._attributes import CONSTITUTION_HASH, CONVERSATION_ID, SENTRY_OP
from agent_trace._config import SentryDsn
from agent_trace._fork import reset_in_forked_child
from agent_trace._log import warn_once
from agent_trace._version import __version__
from agent_trace.pipeline.drops import SHUTDOWN_TIMEOUT, DropCounter
from agent_trace.pipeline.sinks._http import HttpAnswer, HttpError, HttpPoster
from agent_trace.pipeline.sinks._pacing import Pacer, pacer_for

__all__ = ["SentryEnvelopeSink", "span_json", "transaction_json"]

_log = logging.getLogger(__name__)

_ORIGIN = "auto.agent_trace"
_KIND_OPS = {
    SpanKind.SERVER: "http.server",
    SpanKind.CLIENT: "http.client",
    SpanKind.PRODUCER: "queue.publish",
    SpanKind.CONSUMER: "queue.process",
}


def _status(span: ReadableSpan, attrs: Mapping[str, Any]) -> str:
    if span.status.status_code is StatusCode.ERROR:
        return "internal_error"
    if attrs.get("agent_trace.cancelled"):
        return "cancelled"
    return "ok"


def _op(span: ReadableSpan, attrs: Mapping[str, Any]) -> str:
    op = attrs.get(SENTRY_OP)
    if isinstance(op, str) and op:
        return op
    return _KIND_OPS.get(span.kind, "default")


def _data(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attributes as a new dict of JSON-safe values."""
    if attrs is None:
        return {}
    # The SDK hands out its attributes behind read-only mappings whose item-by-item access
    # (and even `len()`) goes through Python code; their `copy()` is the underlying dict's,
    # made in C.
    copy = getattr(attrs, "copy", None)
    data = copy() if copy is not None else None
    if type(data) is not dict:
        data = dict(attrs)
    if not data:
        return data
    unsafe = None
    for key, value in data.items():
        kind = type(value)
        # Texts, integers, booleans and finite floats are JSON as they are: almost every value.
        if kind is str or kind is int or kind is bool or (kind is float and value - value == 0):
            continue
        # Arrays of texts (agents, participants): the encoder writes tuples as JSON arrays.
        if kind is tuple and all(type(item) is str for item in value):
            continue
        if unsafe is None:
            unsafe = []
        unsafe.append(key)
    if unsafe is not None:
        for key in unsafe:
            data[key] = _json_safe(data[key])
    return data


def _json_safe(value: Any, depth: int = 0) -> Any:
    """An attribute value as JSON: the envelope is serialised with `allow_nan=False`, and one
    bytes or NaN value set through the raw OpenTelemetry API would lose the whole transaction."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if depth > 8:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    # Anything else (a processor's own objects) as its text, as the OpenTelemetry SDK stores
    # such a value; a text that cannot be had makes the span unserializable.
    return str(value)


# A JSON string literal for a text, in C. Not escaped to ASCII: a lone surrogate (which the
# OpenTelemetry API lets through) would become a `\udXXX` escape that Sentry's JSON parser
# refuses, losing the whole envelope; unescaped, `_utf8` replaces it.
_quote = json.encoder.encode_basestring


def _utf8(text: str) -> bytes:
    """`text` as UTF-8, a lone surrogate replaced by U+FFFD (a pair split in two joined)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        # Rare: the cost of the round trip is paid by the envelope that needs it.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def _refuse(value: Any) -> Any:
    raise TypeError(f"a {type(value).__name__} is not JSON")


def _make_encode() -> Callable[[Any], str]:
    """Compact JSON refusing NaN, without `JSONEncoder.encode`'s per-call set-up: the C
    encoder is made once (no circular check: attribute values cannot refer to themselves)."""
    fallback = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return fallback
    encoder = make(None, _refuse, _quote, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        if type(value) is not dict:
            return fallback(value)
        return "".join(encoder(value, 0))

    return encode


_encode = _make_encode()


class _Parked(NamedTuple):
    """A finished span converted to the JSON of a Sentry span, waiting for its transaction."""

    span_id: int
    json: str


def _span_fields(span: ReadableSpan, data: Mapping[str, Any]) -> str:
    """The fields a Sentry span and a transaction's trace context share, as JSON text."""
    ctx = span.context
    assert ctx is not None
    parent = span.parent
    parent_field = f'"parent_span_id":"{parent.span_id:016x}",' if parent is not None else ""
    return (
        f'"trace_id":"{ctx.trace_id:032x}","span_id":"{ctx.span_id:016x}",{parent_field}'
        f'"op":{_quote(_op(span, data))},"status":"{_status(span, data)}",'
        f'"origin":"{_ORIGIN}","data":{_encode(data)}'
    )


def span_json(span: ReadableSpan) -> str:
    """A Sentry span for an OTel span, as JSON text (written directly: building dicts for
    `json.dumps` cost twice as much, and this runs for every span)."""
    data = _data(span.attributes)
    start_ns = span.start_time or 0
    end_ns = span.end_time or start_ns
    return (
        f'{{{_span_fields(span, data)},"description":{_quote(span.name)},'
        f'"start_timestamp":{start_ns / 1e9!r},"timestamp":{end_ns / 1e9!r}}}'
    )


def transaction_json(
    root: ReadableSpan,
    children: Sequence[str],
    *,
    event_id: str,
    environment: str | None,
    release: str | None,
    resource_json: str,
    data: dict[str, Any] | None = None,
) -> str:
    """A transaction event for `root` with already converted descendant spans, as JSON text
    (`data` in place of the root's attributes when given)."""
    if data is None:
        data = _data(root.attributes)
    tags: dict[str, str] = {}
    if isinstance(data.get(CONSTITUTION_HASH), str):
        tags["constitutional_hash"] = data[CONSTITUTION_HASH]
    if isinstance(data.get(CONVERSATION_ID), str):
        tags["conversation_id"] = data[CONVERSATION_ID]
    service = root.resource.attributes.get("service.name")
    if service:
        tags["service"] = str(service)
    start_ns = root.start_time or 0
    end_ns = root.end_time or start_ns
    extra = ""
    if environment:
        extra += f',"environment":{_quote(environment)}'
    if release:
        extra += f',"release":{_quote(release)}'
    return (
        f'{{"type":"transaction","event_id":"{event_id}","platform":"python",'
        f'"transaction":{_quote(root.name)},"transaction_info":{{"source":"custom"}},'
        f'"start_timestamp":{start_ns / 1e9!r},"timestamp":{end_ns / 1e9!r},'
        f'"contexts":{{"trace":{{{_span_fields(root, data)}}},'
        f'"otel":{{"resource":{resource_json}}}}},'
        f'"spans":[{",".join(children)}],"tags":{_encode(tags)},"sdk":{_SDK}{extra}}}'
    )


_SDK = _encode({"name": "agent-trace", "version": __version__})


# Why a transaction did not reach Sentry, as counted in `agent_trace.dropped_spans()`.
NETWORK_ERROR = "network_error"  # refused, reset, timed out: no answer
RATE_LIMITED = "rate_limited"  # a 429, or sent while Sentry's last rate limit still held
REJECTED = "rejected"  # any other 4xx: a bad key, a project that does not exist, too large
SERVER_ERROR = "server_error"  # 5xx
UNSERIALIZABLE = "unserializable"  # a value the JSON encoder refused

# Sentry's answer to a 429 without a usable Retry-After, and the longest limit we believe.
_DEFAULT_RETRY_AFTER_S = 60.0
_MAX_RETRY_AFTER_S = 3600.0
# Envelopes posted together (see `HttpPoster.post_many`): the answers to this many small
# requests fit in the sockets' buffers, so sending all before reading any cannot stall.
_GROUP_ENVELOPES = 32
_GROUP_BYTES = 1024 * 1024


class SentryEnvelopeSink:
    """Posts each transaction as an envelope to the DSN's envelope endpoint, on the sink's own
    export thread, over one kept-alive connection.

    Every transaction that does not reach Sentry is counted with its reason (the module's
    constants) by the number of spans in it; the worker leaves this sink's accounting to it
    (`counts_own_drops`). An export or flush returns False when a transaction was lost since
    the last one. After shutdown nothing more is counted: what was still unanswered then is
    counted as `shutdown_timeout`, once.
    """

    name = "sentry"
    counts_own_drops = True

    def __init__(
        self,
        dsn: SentryDsn,
        drops: DropCounter,
        *,
        environment: str | None,
        release: str | None,
        timeout_s: float,
        max_parked_spans: int = 20_000,
        poster: Any = None,
    ) -> None:
        self._dsn = dsn
        self._drops = drops
        self._environment = environment
        self._release = release
        # Bandwidth costs nothing on loopback (Spotlight, a local Relay); elsewhere the
        # envelope is compressed, at the fastest level: a JSON transaction shrinks 4-6 times.
        self._compress = not _is_loopback(dsn.host)
        client = f"agent-trace/{__version__}"
        self._poster = poster or HttpPoster(
            dsn.envelope_url,
            timeout_s=timeout_s,
            headers={
                "User-Agent": client,
                "Content-Type": "application/x-sentry-envelope",
                "X-Sentry-Auth": f"{dsn.auth_header}, sentry_version=7, sentry_client={client}",
                **({"Content-Encoding": "gzip"} if self._compress else {}),
            },
        )
        self._max_parked = max_parked_spans
        # parent span id -> converted spans of finished descendants waiting for that parent
        self._parked: OrderedDict[int, list[_Parked]] = OrderedDict()
        self._parked_roots: dict[int, ReadableSpan] = {}
        self._parked_count = 0
        self._lock = threading.Lock()
        # Spans of transactions taken off the parking area and not yet answered by Sentry.
        self._unanswered = 0
        self._limited_until = 0.0
        # The last post got no answer: the next batch starts with a probe.
        self._unreachable = False
        self._closed = False
        self._lost = 0
        self._lost_at_last_flush = 0
        self._resource_cache: tuple[object, str] | None = None
        self._dsc_extra = "".join(
            f',"{key}":{_quote(value)}'
            for key, value in (("environment", environment), ("release", release))
            if value
        )
        self.transactions_sent = 0
        self.last_error: str | None = None
        reset_in_forked_child(self, SentryEnvelopeSink._after_fork)

    def _after_fork(self) -> None:
        # What is parked and unanswered is the parent's to send; a parent thread may have held
        # the lock at the fork.
        self._lock = threading.Lock()
        self._parked = OrderedDict()
        self._parked_roots = {}
        self._parked_count = 0
        self._unanswered = 0

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        ready: list[tuple[ReadableSpan, list[_Parked]]] = []
        unserializable = 0
        # Converting a batch is pure Python: a paced batch lets the application's threads in.
        pacer = pacer_for(spans)
        with self._lock:
            if self._closed:
                # A batch the worker was handing over as shutdown came, which left it to the
                # sink: parked or posted now, it would never be counted.
                self._drops.add(self.name, SHUTDOWN_TIMEOUT, len(spans))
                return False
            parked = self._parked
            parked_roots = self._parked_roots
            for span in spans:
                pacer.tick()
                ctx = span.context
                assert ctx is not None
                span_id = ctx.span_id
                descendants = parked.pop(span_id, None)
                if descendants is None:
                    descendants = []
                    top_child = None
                else:
                    top_child = parked_roots.pop(span_id)
                    self._parked_count -= len(descendants)
                parent = span.parent
                if parent is None or parent.is_remote:
                    ready.append((span, descendants))
                    continue
                top = span
                try:
                    converted: _Parked | None = _Parked(span_id, span_json(span))
                except Exception as exc:  # a value's own __str__ may raise anything
                    # One span the encoder refuses; its descendants still find their trace.
                    unserializable += 1
                    self.last_error = f"a span could not be encoded: {exc}"
                    converted = None
                    # It cannot head a transaction either: its topmost finished child (parked
                    # with the rest of its descendants) does, if the parent never comes.
                    if top_child is None:
                        continue
                    top = top_child
                parent_id = parent.span_id
                bucket = parked.get(parent_id)
                if bucket is None:
                    bucket = parked[parent_id] = []
                    # The topmost finished span of the bucket, in case the parent never comes.
                    parked_roots[parent_id] = top
                else:
                    # Overflow evicts the bucket idle longest, not the oldest: a long session
                    # whose turns keep finishing stays parked while crashed agents' leftovers
                    # go first.
                    parked.move_to_end(parent_id)
                if converted is not None:
                    bucket.append(converted)
                bucket.extend(descendants)
                self._parked_count += (converted is not None) + len(descendants)
            while self._parked_count > self._max_parked and self._parked:
                ready.append(self._unpark_oldest())
            self._unanswered += sum(1 + len(children) for _, children in ready)
            if unserializable:
                self._lost += 1
        if unserializable:
            self._drops.add(self.name, UNSERIALIZABLE, unserializable)
        return self._send(ready, pacer) and not unserializable

    def _unpark_oldest(self) -> tuple[ReadableSpan, list[_Parked]]:
        parent_id, bucket = self._parked.popitem(last=False)
        self._parked_count -= len(bucket)
        top = self._parked_roots.pop(parent_id)
        top_id = top.context.span_id if top.context else None
        return top, [parked for parked in bucket if parked.span_id != top_id]

    def _send(self, ready: Sequence[tuple[ReadableSpan, list[_Parked]]], pacer: Pacer) -> bool:
        lost_before = self._lost
        unreachable = False
        # Envelopes ready to go, (spans in it, body): posted together, pipelined when the
        # poster can (one write and one wake-up for many requests).
        group: list[tuple[int, bytes]] = []
        group_bytes = 0
        for root, children in ready:
            pacer.tick()
            spans = 1 + len(children)
            if unreachable:
                # One attempt per batch while Sentry does not answer: the rest would each
                # wait out the same timeout.
                self._settle(spans, NETWORK_ERROR)
                continue
            if time.monotonic() < self._limited_until:
                self._settle(spans, RATE_LIMITED)
                continue
            try:
                body = self._envelope(root, children)
            except Exception as exc:  # a value's own __str__ may raise anything
                self.last_error = f"a transaction could not be encoded: {exc}"
                try:
                    # The root's attributes are what failed (its children are encoded
                    # already): it is lost, its children still go, in its frame.
                    if not children:
                        raise
                    body = self._envelope(root, children, bare=True)
                except Exception:
                    self._settle(spans, UNSERIALIZABLE)
                    continue
                self._settle(1, UNSERIALIZABLE)
                spans -= 1
            group.append((spans, body))
            group_bytes += len(body)
            # While Sentry does not answer, one envelope goes first as a probe: the batch's
            # others are not built for nothing (memory and CPU during an outage).
            most = 1 if self._unreachable else _GROUP_ENVELOPES
            if len(group) >= most or group_bytes >= _GROUP_BYTES:
                unreachable = not self._post(group)
                group = []
                group_bytes = 0
        if group:
            self._post(group)
        return self._lost == lost_before

    def _post(self, group: Sequence[tuple[int, bytes]]) -> bool:
        """Post the envelopes and settle each by Sentry's answer; False if one got none."""
        answers: list[HttpAnswer | HttpError] = self._poster.post_many([body for _, body in group])
        answered = True
        for (spans, _), answer in zip(group, answers, strict=True):
            if isinstance(answer, HttpError):
                answered = False
                self.last_error = str(answer)
                self._settle(spans, NETWORK_ERROR)
                continue
            self._note_rate_limits(answer)
            status = answer.status
            if 200 <= status < 300:
                self.transactions_sent += 1
                self._settle(spans, None)
                continue
            self.last_error = f"Sentry answered HTTP {status}"
            if status == 429:
                self._settle(spans, RATE_LIMITED)
            elif status >= 500:
                self._settle(spans, SERVER_ERROR)
            else:
                self._settle(spans, REJECTED)
        self._unreachable = not answered
        return answered

    def _settle(self, spans: int, lost_reason: str | None) -> None:
        with self._lock:
            if self._closed:
                # Shutdown counted everything unanswered then: an answer now changes nothing.
                return
            self._unanswered -= spans
            if lost_reason is None:
                return
            self._lost += 1
        self._drops.add(self.name, lost_reason, spans)

    def _note_rate_limits(self, answer: HttpAnswer) -> None:
        limit_s = _transaction_limit_s(answer)
        if limit_s is not None:
            self._limited_until = max(self._limited_until, time.monotonic() + limit_s)

    def _envelope(
        self, root: ReadableSpan, children: Sequence[_Parked], *, bare: bool = False
    ) -> bytes:
        event_id = uuid.uuid4().hex
        payload_text = transaction_json(
            root,
            [child.json for child in children],
            event_id=event_id,
            environment=self._environment,
            release=self._release,
            resource_json=self._resource_json(root),
            data={} if bare else None,
        )
        payload = _utf8(payload_text)
        ctx = root.context
        assert ctx is not None
        # The trace's dynamic sampling context, as Sentry's SDKs put it in the header.
        dsc = (
            f'{{"trace_id":"{ctx.trace_id:032x}","public_key":{_quote(self._dsn.public_key)},'
            f'"sampled":"true","transaction":{_quote(root.name)}{self._dsc_extra}}}'
        )
        sent_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        header = f'{{"event_id":"{event_id}","sent_at":"{sent_at}","sdk":{_SDK},"trace":{dsc}}}'
        item = f'{{"type":"transaction","content_type":"application/json","length":{len(payload)}}}'
        body = _utf8(f"{header}\n{item}\n") + payload
        return gzip.compress(body, 1) if self._compress else body

    def _resource_json(self, span: ReadableSpan) -> str:
        # Every span of a provider shares its resource: encoded once.
        resource = span.resource
        cached = self._resource_cache
        if cached is None or cached[0] is not resource:
            cached = self._resource_cache = (resource, _encode(_data(resource.attributes)))
        return cached[1]

    def flush(self, timeout_s: float) -> bool:
        # A flush delivers everything finished, so subtrees still waiting for a parent go now.
        with self._lock:
            ready = [self._unpark_oldest() for _ in range(len(self._parked))]
            self._unanswered += sum(1 + len(children) for _, children in ready)
        self._send(ready, Pacer())
        delivered = self._lost == self._lost_at_last_flush
        self._lost_at_last_flush = self._lost
        return delivered

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            left = self._unanswered + self._parked_count
            self._unanswered = 0
            self._parked.clear()
            self._parked_roots.clear()
            self._parked_count = 0
        # A post still waiting for Sentry fails now instead of at its timeout.
        self._poster.close()
        if left:
            self._drops.add(self.name, SHUTDOWN_TIMEOUT, left)
            warn_once(
                _log,
                "shutdown:sentry-unanswered",
                "agent-trace: shutdown gave up on %d spans Sentry (%s) had not answered for "
                "(see agent_trace.dropped_spans())",
                left,
                self._dsn.redacted,
            )

    def describe(self) -> str:
        return self._dsn.redacted

    @property
    def held(self) -> int:
        """Spans parked or waiting for Sentry's answer."""
        return self._parked_count + self._unanswered


def _is_loopback(host: str) -> bool:
    """Whether a DSN's `host[:port]` names this machine (a name merely starting with `127.`
    or `localhost` does not)."""
    try:
        name = urllib.parse.urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _transaction_limit_s(answer: HttpAnswer) -> float | None:
    """How long Sentry asks for no transactions, from its answer; None when it does not."""
    limits = answer.headers.get("x-sentry-rate-limits")
    if limits:
        longest: float | None = None
        # `seconds:categories:scope[:reason[:namespaces]]`, comma separated; no category = all.
        for entry in limits.split(","):
            fields = entry.strip().split(":")
            if len(fields) < 2:
                continue
            # Proxies and hand-written limits put spaces around the names.
            categories = [name.strip() for name in fields[1].split(";")]
            if any(categories) and "transaction" not in categories:
                continue
            seconds = _seconds(fields[0])
            if seconds is not None:
                longest = seconds if longest is None else max(longest, seconds)
        if longest is not None or answer.status != 429:
            return longest
    if answer.status != 429:
        return None
    retry_after = _seconds(answer.headers.get("retry-after", ""))
    return _DEFAULT_RETRY_AFTER_S if retry_after is None else retry_after


def _seconds(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    # An infinite limit is the longest we believe, not none at all.
    if math.isnan(value) or value < 0:
        return None
    return min(value, _MAX_RETRY_AFTER_S)
