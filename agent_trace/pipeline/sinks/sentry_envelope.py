"""Finished spans as Sentry transactions: one per local root, its descendants as spans.

Children usually end before their parent, so the sink parks each finished span's subtree under
its parent's id until that parent ends; a span with no local parent closes a transaction. A
subtree whose parent never arrives (a span left open, a background task outliving its
request) is sent as a transaction of its own at the next flush or, the one idle longest first,
when the parking area is full: it keeps its `parent_span_id`, so Sentry still places it in
the trace.

A span is turned into the fields of a Sentry span when it parks, and a transaction is encoded
in one call around them (`sentry_json`). The envelopes are posted by the sink itself on its
export thread (`_http.HttpPoster`), a group at a time, pipelined on one kept-alive connection:
sentry-sdk's transport made one urllib3 request per envelope on a thread of its own, about
580 us of CPU each, more than the OTLP sink spends on a whole transaction's spans (see
BENCHMARKS.md).
"""

from __future__ import annotations

import gzip
import ipaddress
import logging
import math
import os
import random
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from agent_trace._config import SentryDsn
from agent_trace._fork import reset_in_forked_child
from agent_trace._log import warn_once
from agent_trace._version import __version__
from agent_trace.pipeline.drops import SHUTDOWN_TIMEOUT, DropCounter
from agent_trace.pipeline.sinks._http import HttpAnswer, HttpError, HttpPoster
from agent_trace.pipeline.sinks._pacing import Pacer, pacer_for
from agent_trace.pipeline.sinks.sentry_json import (
    SDK,
    encode,
    encode_event,
    encode_safe_event,
    make_safe,
    quote,
    safe_data,
    span_fields,
    transaction_event,
    utf8,
)

__all__ = ["SentryEnvelopeSink"]

_log = logging.getLogger(__name__)

_SDK_JSON = encode(SDK)

# A span's fields as `sentry_json.span_fields` makes them.
_Fields = dict[str, Any]
# A transaction ready to go: the fields of the span heading it, its resource, the fields of
# the other spans in it, and whether the head is the transaction's own span (no local parent)
# rather than the topmost of a subtree whose parent never came.
_Ready = tuple[_Fields, Resource, list[_Fields], bool]


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
        # parent span id (hex) -> fields of finished descendants waiting for that parent; the
        # first is the topmost, the head of the transaction sent if the parent never comes
        self._parked: OrderedDict[str, list[_Fields]] = OrderedDict()
        # parent span id -> the resource of that first span
        self._parked_resources: dict[str, Resource] = {}
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
        self._resource_cache: tuple[object, dict[str, Any]] | None = None
        # Event ids from a generator of our own: `uuid4()` asks the kernel for each (2 us),
        # and the `random` module's shared one may be seeded by the application. A process
        # forked without Python's fork hooks (by C code) must not repeat its parent's ids:
        # the generator is renewed whenever the process id changes.
        self._ids = random.Random()
        self._ids_pid = os.getpid()
        self._sent_at = (0, "")
        self._dsc_extra = "".join(
            f',"{key}":{quote(value)}'
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
        self._parked_resources = {}
        self._parked_count = 0
        self._unanswered = 0

    def export(self, spans: Sequence[ReadableSpan]) -> bool:
        ready: list[_Ready] = []
        # Converting a batch is pure Python: a paced batch lets the application's threads in.
        pacer = pacer_for(spans)
        with self._lock:
            if self._closed:
                # A batch the worker was handing over as shutdown came, which left it to the
                # sink: parked or posted now, it would never be counted.
                self._drops.add(self.name, SHUTDOWN_TIMEOUT, len(spans))
                return False
            parked = self._parked
            resources = self._parked_resources
            parked_count = self._parked_count
            unanswered = unusable = 0
            # Bound once: this loop runs for every span.
            tick, take, find, touch = pacer.tick, parked.pop, parked.get, parked.move_to_end
            for span in spans:
                tick()
                try:
                    fields, parent_id = span_fields(span)
                    # Read here: a span class of a processor's own may raise for it, and this
                    # loop must not end part-way (what it took from the parking area would be
                    # lost uncounted).
                    resource = span.resource
                except Exception as exc:  # a span without a context, or one made by hand
                    unusable += 1
                    self.last_error = f"a span could not be encoded: {exc}"
                    continue
                span_id = fields["span_id"]
                descendants = take(span_id, None)
                if descendants is not None:
                    del resources[span_id]
                    parked_count -= len(descendants)
                if parent_id is None:
                    children = descendants or []
                    ready.append((fields, resource, children, True))
                    unanswered += 1 + len(children)
                    continue
                bucket = find(parent_id)
                if bucket is None:
                    bucket = parked[parent_id] = [fields]
                    resources[parent_id] = resource
                else:
                    # Overflow evicts the bucket idle longest, not the oldest: a long session
                    # whose turns keep finishing stays parked while crashed agents' leftovers
                    # go first.
                    touch(parent_id)
                    bucket.append(fields)
                parked_count += 1
                if descendants:
                    bucket += descendants
                    parked_count += len(descendants)
            self._unanswered += unanswered
            self._parked_count = parked_count
            while self._parked_count > self._max_parked and self._parked:
                ready.append(self._unpark_oldest())
            if unusable:
                self._lost += 1
        if unusable:
            self._drops.add(self.name, UNSERIALIZABLE, unusable)
        return self._send(ready, pacer) and not unusable

    def _unpark_oldest(self) -> _Ready:
        """The bucket idle longest, as a transaction headed by its topmost span (the lock held)."""
        parent_id, bucket = self._parked.popitem(last=False)
        resource = self._parked_resources.pop(parent_id)
        self._parked_count -= len(bucket)
        self._unanswered += len(bucket)
        return bucket[0], resource, bucket[1:], False

    def _send(self, ready: Sequence[_Ready], pacer: Pacer) -> bool:
        lost_before = self._lost
        unreachable = False
        # Envelopes ready to go, (spans in it, body): posted together, pipelined when the
        # poster can (one write and one wake-up for many requests).
        group: list[tuple[int, bytes]] = []
        group_bytes = 0
        for head, resource, children, own in ready:
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
                body = self._envelope(head, resource, children)
                lost = 0
                if body is None:
                    # A value orjson does not take as it is: span by span, the careful way.
                    body, lost = self._careful_envelope(head, resource, children, own)
            except Exception as exc:  # a resource's value, a span name that is not text
                self.last_error = f"a transaction could not be encoded: {exc}"
                body, lost = None, spans
            if lost:
                self._settle(lost, UNSERIALIZABLE)
                spans -= lost
            if body is None:
                continue
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
        # Delivered spans are settled together: one turn of the lock for the group.
        delivered = 0
        for (spans, _), answer in zip(group, answers, strict=True):
            if isinstance(answer, HttpError):
                answered = False
                self.last_error = str(answer)
                self._settle(spans, NETWORK_ERROR)
                continue
            status = answer.status
            # Most answers are a 200 without limits: checked before the parsing call.
            if status == 429 or "x-sentry-rate-limits" in answer.headers:
                self._note_rate_limits(answer)
            if 200 <= status < 300:
                self.transactions_sent += 1
                delivered += spans
                continue
            self.last_error = f"Sentry answered HTTP {status}"
            if status == 429:
                self._settle(spans, RATE_LIMITED)
            elif status >= 500:
                self._settle(spans, SERVER_ERROR)
            else:
                self._settle(spans, REJECTED)
        if delivered:
            self._settle(delivered, None)
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
        self, head: _Fields, resource: Resource, children: list[_Fields], *, safe: bool = False
    ) -> bytes | None:
        """The envelope of a transaction; None when it must go the careful way (`safe`: its
        spans were made safe, and it goes that way)."""
        pid = os.getpid()
        if pid != self._ids_pid:
            self._ids, self._ids_pid = random.Random(), pid
        event_id = f"{self._ids.getrandbits(128):032x}"
        event = transaction_event(
            head,
            children,
            event_id=event_id,
            resource=self._resource_data(resource),
            environment=self._environment,
            release=self._release,
        )
        payload = encode_safe_event(event) if safe else encode_event(event)
        if payload is None:
            return None
        # The trace's dynamic sampling context, as Sentry's SDKs put it in the header.
        dsc = (
            f'{{"trace_id":"{head["trace_id"]}","public_key":{quote(self._dsn.public_key)},'
            f'"sampled":"true","transaction":{quote(head["description"])}{self._dsc_extra}}}'
        )
        header = (
            f'{{"event_id":"{event_id}","sent_at":"{self._sent_at_text()}","sdk":{_SDK_JSON},'
            f'"trace":{dsc}}}'
        )
        item = f'{{"type":"transaction","content_type":"application/json","length":{len(payload)}}}'
        body = utf8(f"{header}\n{item}\n") + payload
        return gzip.compress(body, 1) if self._compress else body

    def _careful_envelope(
        self, head: _Fields, resource: Resource, children: list[_Fields], own: bool
    ) -> tuple[bytes | None, int]:
        """The envelope with every span's attributes made safe, and how many spans it lost:
        those whose attributes cannot be had as text. The transaction's own span is kept
        without its attributes, as the frame its children hang in (when it has finite times);
        the topmost span of a subtree whose parent never came is lost, and the next heads the
        transaction."""
        kept = []
        for fields in children:
            try:
                make_safe(fields)
            except Exception as exc:  # a value's own __str__ may raise anything
                self.last_error = f"a span could not be encoded: {exc}"
                continue
            kept.append(fields)
        lost = len(children) - len(kept)
        try:
            make_safe(head)
        except Exception as exc:
            self.last_error = f"a span could not be encoded: {exc}"
            lost += 1
            if not kept:
                return None, lost
            if own and math.isfinite(head["start_timestamp"]) and math.isfinite(head["timestamp"]):
                head = {**head, "data": {}}
            else:
                # Not a frame a transaction can have (no times): the next span heads it.
                head, kept = kept[0], kept[1:]
        return self._envelope(head, resource, kept, safe=True), lost

    def _sent_at_text(self) -> str:
        # Formatted once a second: the export and flush threads may both be here, and each
        # replaces the pair whole.
        second = int(time.time())
        cached = self._sent_at
        if cached[0] != second:
            cached = self._sent_at = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)),
            )
        return cached[1]

    def _resource_data(self, resource: Resource) -> dict[str, Any]:
        # Every span of a provider shares its resource: made safe once.
        cached = self._resource_cache
        if cached is None or cached[0] is not resource:
            cached = self._resource_cache = (resource, _safe_resource(resource))
        return cached[1]

    def flush(self, timeout_s: float) -> bool:
        # A flush delivers everything finished, so subtrees still waiting for a parent go now.
        with self._lock:
            ready = [self._unpark_oldest() for _ in range(len(self._parked))]
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
            self._parked_resources.clear()
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


def _safe_resource(resource: Resource | None) -> dict[str, Any]:
    """The resource's attributes as `safe_data` makes them, without those that cannot be had
    as text: one hostile value in a provider's resource would lose every transaction."""
    try:
        attributes: Any = getattr(resource, "attributes", None)
    except Exception:  # a resource class of a processor's own
        return {}
    try:
        return safe_data(attributes)
    except Exception:  # a value's own __str__ may raise anything: the others are kept
        pass
    data: dict[str, Any] = {}
    try:
        items = list(attributes.items())
    except Exception:
        return data
    for key, value in items:
        try:
            data.update(safe_data({key: value}))
        except Exception:
            continue
    return data


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
