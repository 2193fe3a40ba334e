"""Removes secrets and personal data from a finished span, once, before any sink sees it.

What is scrubbed (the value is replaced by `[REDACTED]` or the match inside it by
`[REDACTED:kind]`, and the span gets `agent_trace.scrubbed` listing the attribute keys touched):

- attributes whose key names a secret (password, token, secret, api key, authorization,
  cookie, credential, private key, session key);
- inside any string value and exception message: credentials in URLs (`user:pass@`), secret
  query parameters (`token=`, `sig=`, `key=`, `password=`...), session ids in URLs
  (`;jsessionid=`), bearer/basic authorization values, `password=...` assignments (also as
  JSON text or a dict's repr), API-key shaped tokens (`sk-...`, `ghp_...`, `AKIA...`, JWTs),
  e-mail addresses;
- content attributes (vote rationales, message content, tool arguments) unless content
  capture is on, and exception messages and notes (in stack traces too).

Two steps of the attribute rule (see `agent_trace._attributes`) are applied here too, because
this is the one place every span passes on its way to any sink, the raw OpenTelemetry API's
included: lone surrogates become U+FFFD in the name, attribute keys and values, event names and
the status description (an OTLP exporter cannot encode them and would lose the whole batch), and
names longer than `MAX_NAME_LENGTH` are cut. Attribute keys whose value or own text changed this
way are listed in `agent_trace.scrubbed` like redactions.

Unchanged spans are passed through as the same object, so the common case costs a scan only.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import ItemsView, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import AttributeValue

from agent_trace._attributes import (
    CONTENT_KEYS,
    MAX_NAME_LENGTH,
    bounded_name,
    replace_surrogates,
)

__all__ = ["CONTENT_PLACEHOLDER", "REDACTED", "SCRUBBED_ATTRIBUTE", "Scrubber", "scrub_text"]

REDACTED = "[REDACTED]"
CONTENT_PLACEHOLDER = "[content not captured]"
SCRUBBED_ATTRIBUTE = "agent_trace.scrubbed"

# Keys are judged word by word (split at punctuation and camelCase), so that `max_tokens`,
# `passed` or `session.keywords` keep their values while `sentry_dsn`, `authToken` and
# `x-api-key` lose theirs. A substring match got both wrong: it turned GenAI token counts
# into strings and let `*_dsn` through.
_KEY_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "authorization",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "dsn",
        "signature",
        "apikey",
        "accesskey",
        "privatekey",
        # Run-together spellings of the pairs below, which the word split cannot separate.
        "sessionkey",
        "secretkey",
        "clientsecret",
        "accesstoken",
        "authtoken",
        "refreshtoken",
        "jwt",
        "bearer",
    }
)
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("access", "key"),
        ("private", "key"),
        ("session", "key"),
        ("secret", "key"),
        ("client", "secret"),
    }
)
# Keys of our own that hold no secret whatever their words say.
_SAFE_KEYS = frozenset({"agent_trace.constitution.hash", "agent_trace.scrubbed"})

_PATTERNS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("url_credentials", re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+@"), "[REDACTED:credentials]@"),
    (
        # Secret query parameters, and session ids in a URL's path parameters or its query
        # (`/cart;jsessionid=...`), which end where the path or the query goes on. The
        # separator is matched, not looked behind for: the scan then skips to it at C speed.
        "query_secret",
        re.compile(
            r"(?i)([?&;])(?:(access_token|refresh_token|id_token|token|sig|signature|"
            r"x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|key|"
            r"api_key|apikey|password|passwd|secret|auth|client_secret|code)=[^&#\s]*"
            r"|(jsessionid|phpsessid|sessionid|session_id)=[^;/?&#\s]*)"
        ),
        r"\1\2\3=[REDACTED]",
    ),
    (
        "authorization",
        re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"),
        r"\1 [REDACTED]",
    ),
    (
        "assignment",
        re.compile(
            # No \b before the name: `client_secret=` and `refresh_token=` are assignments too.
            # The name may close a quote (JSON text, a dict's repr, JSON inside JSON with `\"`);
            # a quoted value is replaced whole, spaces and escaped quotes included, and keeps
            # its quotes so the text stays what it was. A quote never closed (text cut short)
            # falls back to the unquoted form.
            r"(?i)(?<![A-Za-z0-9])((?:password|passwd|pwd|secret|api[_-]?key|token)"
            r"(?:\\?['\"])?\s*[:=]\s*)"
            r"(?:[bB]?(\\?['\"])(?:(?!\2)[^\\\n]|\\.)+?\2|['\"]?[^\s'\",;]{3,})"
        ),
        r"\1\2[REDACTED]\2",
    ),
    (
        "api_key",
        re.compile(
            r"\b(sk-[A-Za-z0-9_-]{16,}|sk_(live|test)_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{20,}"
            r"|AKIA[0-9A-Z]{16}|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{30,}"
            r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
        ),
        "[REDACTED:api_key]",
    ),
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[REDACTED:email]"),
)
# A value without any of these characters cannot match a pattern above: skip the regexes.
_TRIGGER = re.compile(r"[@=:]|sk-|sk_|gh[pousr]_|AKIA|xox|AIza|eyJ|(?i:bearer|basic|token)")


def scrub_text(text: str) -> str:
    """Replace secrets and e-mail addresses inside free text, and lone surrogates by U+FFFD."""
    if not text.isascii():
        text = replace_surrogates(text)
    if not _TRIGGER.search(text):
        return text
    for _, pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Lines of a formatted traceback that belong to its layout, not to any exception's text (inside
# an exception group: once the group's margin is taken off).
_CHAIN_LINES = frozenset(
    {
        "Traceback (most recent call last):",
        "Exception Group Traceback (most recent call last):",
        "The above exception was the direct cause of the following exception:",
        "During handling of the above exception, another exception occurred:",
    }
)
_GROUP_LINES = re.compile(r"and \d+ more exceptions?|\.\.\. \(max_group_depth is \d+\)")
_EXCEPTION_HEADER = re.compile(r"([\w.]+)(:.*)?")
# An exception group's traceback puts a margin before each of its lines: two spaces a level of
# nesting, then `| ` (`+ ` on the first line of the outermost group).
_GROUP_MARGIN = re.compile(r"((?:  )+)([|+])(?: |$)")
# The lines around a group's members: `+-+---- 1 ----` before the first, `+---- 2 ----` before
# the next (`...` past the group's width), `+--------` after the last. Their last `+` stands in
# the column of the members' margin.
_GROUP_SEPARATOR = re.compile(r" *(?:\+-)?\+-+( (?:\d+|\.\.\.) -+)?")


def _without_exception_text(stack: str) -> str:
    """The traceback with the message and notes of every exception in its chain removed.

    Frames are indented, so a line at column 0 that is not part of the layout is an
    exception's `Type: message` line, or a continuation of its message, or a note: the type
    is kept, the rest is replaced up to the next part of the layout. Replacing only these lines
    keeps the frames readable when a message is as short as one letter.

    Inside an exception group, column 0 is the one after the group's margin (`  | `). The
    margin is followed level by level through the separators between members, so that a
    frame's source line starting with `|` or `+` is not taken for a margin.
    """
    out: list[str] = []
    # Blank lines inside an exception's text are held back: they are the text's own unless a
    # part of the layout follows.
    held: list[str] = []
    in_text = False
    depth = 0  # the group level of the current line; 0 outside any group
    previous = ""
    for line in stack.split("\n"):
        starts_exception, previous = not previous, line
        separator = _GROUP_SEPARATOR.fullmatch(line)
        if separator is not None:
            # A numbered separator opens a member one level in; the closing one ends a group.
            depth = line.rindex("+") // 2 - (separator.group(1) is None)
            out.extend(held)
            out.append(line)
            held, in_text = [], False
            continue

        margin = ""
        found = _GROUP_MARGIN.match(line)
        if found is not None:
            level = len(found.group(1)) // 2
            text = line[found.end() :]
            if found.group(2) == "+":
                # Only the outermost group's first line carries `+`.
                accepted = level == 1 and text in _CHAIN_LINES
            else:
                # Lines never go in by a level without a separator, except where an outermost
                # group without a traceback of its own starts.
                accepted = level <= depth or (level == 1 and starts_exception and not in_text)
            if accepted:
                margin, depth = line[: found.end()], level
        text = line[len(margin) :]

        if not text:
            (held if in_text else out).append(line)
            continue
        if text in _CHAIN_LINES or _GROUP_LINES.fullmatch(text):
            out.extend(held)
            out.append(line)
            held, in_text = [], False
            continue
        if in_text:
            # A message's further lines (indented or not), blank lines and notes run until the
            # next part of the layout: one placeholder stands for them all.
            held = []
            continue
        if text[0].isspace():
            out.append(line)
            continue
        in_text = True
        header = _EXCEPTION_HEADER.fullmatch(text)
        if header is None:
            out.append(margin + CONTENT_PLACEHOLDER)
        elif header.group(2):
            out.append(f"{margin}{header.group(1)}: {CONTENT_PLACEHOLDER}")
        else:
            out.append(line)
    out.extend(held)
    return "\n".join(out)


def is_secret_key(key: str) -> bool:
    """Whether an attribute key names a secret (its value is then replaced whole)."""
    if not isinstance(key, str):
        # A key that is not text can only have been set past the SDK's checks: judge its text.
        key = str(key)
    if key in _SAFE_KEYS:
        return False
    words = [w.lower() for w in _KEY_WORDS.findall(key)]
    if any(w in _SECRET_WORDS for w in words):
        return True
    if any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words)):
        return True
    # `auth` alone is too common a prefix (`auth.method`); as the last word it names a value.
    return bool(words) and words[-1] == "auth"


def _scrub_value(value: AttributeValue, depth: int = 0) -> AttributeValue:
    """`value` itself when clean, else a scrubbed copy; maps and mixed arrays included.

    The model sets only scalars and arrays of strings, but the raw OpenTelemetry API (other
    instrumentation, `scope.span`) may set maps of headers and mixed arrays.
    """
    if isinstance(value, str):
        cleaned = scrub_text(value)
        # str.__eq__, not ==: a str subclass set through the raw API may override __eq__.
        return value if cleaned is value or str.__eq__(cleaned, value) else cleaned
    if depth > 8:
        return value
    # Arrays first: they are common, and the ABC check for Mapping is slow.
    if isinstance(value, (tuple, list)):
        scrubbed = [_scrub_value(v, depth + 1) for v in value]
        changed = any(a is not b for a, b in zip(scrubbed, value, strict=True))
        return scrubbed if changed else value
    if isinstance(value, Mapping):
        items: dict[Any, AttributeValue] = {}
        changed = False
        for k, v in value.items():
            new_key = replace_surrogates(k) if isinstance(k, str) else k
            new = REDACTED if is_secret_key(str(k)) else _scrub_value(v, depth + 1)
            changed = changed or new is not v or new_key is not k
            items[new_key] = new
        return items if changed else value
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        scrubbed = [_scrub_value(v, depth + 1) for v in value]
        changed = any(a is not b for a, b in zip(scrubbed, value, strict=True))
        return scrubbed if changed else value
    return value


# Bounds of the scrubber's cache of clean texts (entries, characters per entry).
_CLEAN_TEXTS = 4096
_CLEAN_TEXT_LENGTH = 256
# What a generated id is made of (session ids): no scrubbing pattern matches such a text.
_HEX_DIGITS = "0123456789abcdef"
# Arrays longer than this are not remembered as clean attribute values.
_CLEAN_TUPLE_ITEMS = 32
_PLAIN_TYPES = frozenset({str, bool, int, float})


def _settled(item: object, clean: set[str]) -> bool:
    """Whether an array item needs no scrubbing: a number, or a text found clean before."""
    if isinstance(item, str):
        return item in clean
    return isinstance(item, (bool, int, float))


def _items(attrs: Mapping[str, AttributeValue]) -> ItemsView[str, AttributeValue]:
    """The items of a span's attributes, iterated at C speed when the mapping can copy itself.

    A finished span hands out its attributes as a read-only view of the SDK's bounded mapping,
    whose Python-level iteration costs a call per item; its `copy()` is a plain dict.
    """
    if type(attrs) is BoundedAttributes and attrs._immutable:
        # An ended span's attributes, frozen by the SDK when it ended: read in place, without
        # the copy, as nothing can change them any more.
        return attrs._dict.items()
    copy = getattr(attrs, "copy", None)
    if copy is not None:
        snapshot = copy()
        if type(snapshot) is dict:
            return snapshot.items()
    return attrs.items()


def _sequence(span: ReadableSpan, stored: str, public: str) -> Sequence[Any]:
    """A span's events or links; the empty case without the copy the public property makes.

    `ReadableSpan.events` and `.links` copy the SDK's locked list into a new tuple on every
    access, and most spans have neither: the stored list's length says so for free.
    """
    raw = getattr(span, stored, None)
    if type(raw) is BoundedList:
        # Its length through the deque it wraps: `BoundedList.__len__` is a Python call.
        if not raw._dq:  # type: ignore[attr-defined]
            return ()
    elif raw is not None and not raw:
        return ()
    found: Sequence[Any] = getattr(span, public)
    return found


class Scrubber:
    """Scrubs spans; `capture_content` decides whether content attributes may pass."""

    def __init__(self, *, capture_content: bool = False) -> None:
        self.capture_content = capture_content
        self._key_verdicts: dict[str, bool] = {}
        # Short texts already found clean. Most values repeat (agent names, ops, the session
        # id on every span of a session), and a set lookup costs a tenth of the pattern scan.
        # Emptied when full rather than evicted one by one: the values in use return at once.
        self._clean_texts: set[str] = set()
        # (key, value) pairs found clean under a harmless key. A span whose attribute items are
        # all in here is settled by one subset test at C speed, without a Python step per
        # attribute: most spans repeat the pairs of the spans before them (the session id
        # included, once the first span of the session has been scanned). Bounded as above.
        self._clean_items: set[tuple[str, AttributeValue]] = set()

    def _drop_key(self, key: str) -> bool:
        # Keys are low-cardinality: the verdict per key is computed once and cached.
        verdict = self._key_verdicts.get(key)
        if verdict is None:
            if not isinstance(key, str):
                # Set past the SDK's checks: judged by its text, never cached.
                return is_secret_key(key)
            verdict = is_secret_key(key) or (not self.capture_content and key in CONTENT_KEYS)
            # A key with a lone surrogate is never cached: the fast path would keep it as it is.
            if len(self._key_verdicts) < 10_000 and replace_surrogates(key) is key:
                self._key_verdicts[key] = verdict
        return verdict

    def attributes(
        self, attrs: Mapping[str, AttributeValue] | None
    ) -> tuple[dict[str, AttributeValue] | None, list[str]]:
        """Return scrubbed attributes (None if nothing changed) and the keys touched."""
        if attrs is None:
            return None, []
        items = _items(attrs)
        if not items:
            return None, []
        # The keys whose (key, value) pair is not known clean; None: every key is judged.
        unsettled: set[str] | None
        try:
            # At C speed: whether every pair was seen clean before, else which were not.
            if items <= self._clean_items:
                return None, []
            unsettled = {key for key, _ in items - self._clean_items}
        except Exception:
            # An unhashable value (a map set through the raw API) or one whose hash raises:
            # the attributes are judged one by one below.
            unsettled = None
        touched: list[str] = []
        out: dict[str, AttributeValue] | None = None
        verdicts = self._key_verdicts
        clean = self._clean_texts
        for key, value in items:
            if unsettled is not None and key not in unsettled:
                continue
            # This loop runs for the attributes not settled above, on the application's
            # thread: a harmless key with a number, or with a text seen clean before, is
            # settled here.
            if verdicts.get(key) is False:
                if isinstance(value, str):
                    if value in clean:
                        self._remember_item(key, value)
                        continue
                elif isinstance(value, (bool, int, float)):
                    self._remember_item(key, value)
                    continue
                elif isinstance(value, tuple) and all(_settled(item, clean) for item in value):
                    # The SDK keeps lists as tuples: agents, participants.
                    self._remember_item(key, value)
                    continue
            new = self._value(key, value)
            if not isinstance(key, str):
                new_key: str = str(key)  # past the SDK's checks; every sink takes text keys
            else:
                new_key = key if key.isascii() else replace_surrogates(key)
            if new is value and new_key is key:
                if verdicts.get(key) is False:
                    if isinstance(value, str):
                        self._remember(value)
                    elif isinstance(value, tuple):
                        for item in value:
                            if isinstance(item, str):
                                self._remember(item)
                    self._remember_item(key, value)
                continue
            if out is None:
                out = dict(items)
            if new_key is not key:
                del out[key]
            out[new_key] = new
            touched.append(new_key)
        return out, touched

    def _remember(self, text: str) -> None:
        if len(text) <= _CLEAN_TEXT_LENGTH:
            clean = self._clean_texts
            if len(clean) >= _CLEAN_TEXTS:
                clean.clear()
            clean.add(text)

    def learn_clean_id(self, key: str, value: str) -> None:
        """Remember `value` under `key` as clean if it is an id made of lowercase hex digits.

        Such a text can match no pattern (each needs a character or word outside 0-9a-f), so
        it is settled without the scan; anything else is left to the scan as usual.
        """
        if (
            type(value) is str
            and 0 < len(value) <= 64
            and not value.strip(_HEX_DIGITS)
            and not self._drop_key(key)
        ):
            self._remember(value)
            self._remember_item(key, value)

    def _remember_item(self, key: str, value: AttributeValue) -> None:
        """Remember a clean attribute of a harmless key, if it is of a kind that repeats.

        Only values of the exact plain types go in (texts bounded as in `_remember`). A str
        subclass set through the raw API that overrides both `__eq__` and `__hash__` could
        still pass for a remembered text, as it could in `_clean_texts` before.
        """
        if type(value) is str:
            if len(value) > _CLEAN_TEXT_LENGTH:
                return
        elif type(value) is tuple:
            if len(value) > _CLEAN_TUPLE_ITEMS or not all(
                type(item) in _PLAIN_TYPES
                and (type(item) is not str or len(item) <= _CLEAN_TEXT_LENGTH)
                for item in value
            ):
                return
        elif type(value) not in _PLAIN_TYPES:
            return
        clean = self._clean_items
        if len(clean) >= _CLEAN_TEXTS:
            clean.clear()
        clean.add((key, value))

    def _value(self, key: str, value: AttributeValue) -> AttributeValue:
        if self._drop_key(key):
            return REDACTED
        return _scrub_value(value)

    def span(self, span: ReadableSpan) -> ReadableSpan:
        """Return `span` itself when clean, else a scrubbed copy with the same ids."""
        # The common case in one pass over the SDK's stored fields, without a call per part:
        # a short ASCII name, no events, no links, no status text, and every attribute pair
        # seen clean before. Anything else takes the full path (`_span`).
        stored: Any = getattr(span, "_attributes", None)
        if type(stored) is BoundedAttributes and stored._immutable:
            name: Any = getattr(span, "_name", None)
            events: Any = getattr(span, "_events", None)
            links: Any = getattr(span, "_links", None)
            status: Any = getattr(span, "_status", None)
            if (
                type(name) is str
                and name.isascii()
                and len(name) <= MAX_NAME_LENGTH
                and type(events) is BoundedList
                and not events._dq  # type: ignore[attr-defined]
                and type(links) is BoundedList
                and not links._dq  # type: ignore[attr-defined]
                and type(status) is Status
                and not status.description
            ):
                try:
                    if stored._dict.items() <= self._clean_items:
                        return span
                except Exception:
                    pass  # An unhashable value: judged on the full path.
        return self._span(span)

    def _span(self, span: ReadableSpan) -> ReadableSpan:
        # The stored name when there is one: the public property costs a Python call a span.
        name = original_name = getattr(span, "_name", None) or span.name
        if not name.isascii() or len(name) > MAX_NAME_LENGTH:
            name = bounded_name(name)
        # The SDK's own mapping when the span has one (see `_items`), else the public view.
        stored = getattr(span, "_attributes", None)
        attrs, touched = self.attributes(
            stored if type(stored) is BoundedAttributes else span.attributes
        )
        events, events_changed = _sequence(span, "_events", "events"), False
        if events:
            events, events_changed = self._events(events)
        links, links_changed = _sequence(span, "_links", "links"), False
        if links:
            links, links_changed = self._links(links)
        status = original_status = span.status
        if status.description:
            description = scrub_text(status.description)
            if description != status.description:
                status = Status(status.status_code, description)
        if (
            attrs is None
            and not events_changed
            and not links_changed
            and status is original_status
            and name is original_name
        ):
            return span

        new_attrs = dict(attrs if attrs is not None else (span.attributes or {}))
        if touched:
            new_attrs[SCRUBBED_ATTRIBUTE] = touched
        return ReadableSpan(
            name=name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=new_attrs,
            events=events,
            links=links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _without_message(
        self, attrs: Mapping[str, AttributeValue] | None
    ) -> dict[str, AttributeValue] | None:
        """An exception's message is content: without capture, it leaves the event and trace."""
        if not attrs:
            return None
        out = dict(attrs)
        message = attrs.get("exception.message")
        if isinstance(message, str) and message and message != CONTENT_PLACEHOLDER:
            out["exception.message"] = CONTENT_PLACEHOLDER
        stack = attrs.get("exception.stacktrace")
        if isinstance(stack, str):
            out["exception.stacktrace"] = _without_exception_text(stack)
        return out if out != attrs else None

    def _links(self, links: Sequence[Link]) -> tuple[Sequence[Link], bool]:
        """Link attributes are exported like span attributes, so they are scrubbed alike."""
        if not links:
            return links, False
        changed = False
        out: list[Link] = []
        for link in links:
            attrs, _ = self.attributes(link.attributes)
            if attrs is None:
                out.append(link)
                continue
            changed = True
            out.append(Link(link.context, attrs))
        return out, changed

    def _events(self, events: Sequence[Event]) -> tuple[Sequence[Event], bool]:
        if not events:
            return events, False
        changed = False
        out: list[Event] = []
        for event in events:
            attrs, _ = self.attributes(event.attributes)
            if event.name == "exception" and not self.capture_content:
                attrs = self._without_message(attrs if attrs is not None else event.attributes)
            # Event names are free text set by the application, like attribute values.
            name = scrub_text(event.name)
            if attrs is None and name == event.name:
                out.append(event)
                continue
            changed = True
            out.append(
                Event(name, attrs if attrs is not None else event.attributes, event.timestamp)
            )
        return out, changed
