"""Secrets and personal data are scrubbed once, before any sink, through the public API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans

REDACTED = "[REDACTED]"


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans() as captured:
        yield captured


def recorded(spans: CapturedSpans, **attrs: Any) -> dict[str, Any]:
    with agent_trace.session("review") as s:
        s.set_attributes(attrs)
    return dict(spans.one("invoke_workflow review").attributes or {})


@pytest.mark.parametrize(
    "key",
    [
        "agent_trace.db.password",
        "http.request.header.authorization",
        "app.api_key",
        "app.apiKey",
        "app.client_secret",
        "app.access_token",
        "app.refresh-token",
        "app.cookie",
        "app.credentials",
        "app.private_key",
        "app.sentry_dsn",
    ],
)
def test_values_of_secret_looking_keys_are_redacted(spans: CapturedSpans, key: str) -> None:
    attrs = recorded(spans, **{key: "hunter2-but-longer"})

    assert attrs[key] == REDACTED
    assert key in attrs["agent_trace.scrubbed"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gen_ai.usage.input_tokens", 1200),
        ("gen_ai.usage.output_tokens", 80),
        ("gen_ai.request.max_tokens", 4096),
        ("agent_trace.compliance.passed", True),
        ("agent_trace.turn.bypass_reason", "none needed"),
        ("agent_trace.constitution.hash", "cdd01ef066bc6cf2"),
        ("agent_trace.session.keywords", "fairness"),
    ],
)
def test_ordinary_keys_that_contain_a_trigger_word_are_kept(
    spans: CapturedSpans, key: str, value: Any
) -> None:
    attrs = recorded(spans, **{key: value})

    assert attrs[key] == value
    assert "agent_trace.scrubbed" not in attrs


@pytest.mark.parametrize(
    ("value", "leaked", "kept"),
    [
        ("https://alice:s3cretpw@db.example.invalid:5432/x", "s3cretpw", "db.example.invalid"),
        ("https://api.example.invalid/v1?user=1&token=abc123def&x=2", "abc123def", "user=1"),
        ("https://api.example.invalid/v1?sig=deadbeefcafe", "deadbeefcafe", "api.example"),
        ("Authorization: Bearer eyAbCdEf0123456789.payload", "eyAbCdEf0123456789", "Bearer"),
        ("called with sk-abcdefghijklmnop0123456789", "sk-abcdefghijklmnop0123456789", "called"),
        (
            "github ghp_abcdefghijklmnopqrstuvwxyz0123",
            "ghp_abcdefghijklmnopqrstuvwxyz0123",
            "github",
        ),
        ("aws AKIAABCDEFGHIJKLMNOP here", "AKIAABCDEFGHIJKLMNOP", "here"),
        ("contact jane.doe@example.org please", "jane.doe@example.org", "contact"),
        ("config password=hunter2222 loaded", "hunter2222", "loaded"),
    ],
    ids=[
        "url-credentials",
        "query-token",
        "query-signature",
        "bearer",
        "openai-key",
        "github-token",
        "aws-key",
        "email",
        "assignment",
    ],
)
def test_secrets_inside_values_are_redacted(
    spans: CapturedSpans, value: str, leaked: str, kept: str
) -> None:
    attrs = recorded(spans, **{"agent_trace.note": value})

    assert leaked not in attrs["agent_trace.note"]
    assert kept in attrs["agent_trace.note"]
    assert list(attrs["agent_trace.scrubbed"]) == ["agent_trace.note"]


SERIALISED = {
    "json": ('{"password": "correct horse battery", "user": "bob"}', "correct horse battery"),
    "json without spaces": ('{"api_key":"k3y-Value-123","n":1}', "k3y-Value-123"),
    "dict repr": ("{'client_secret': 'it is s3cret', 'user': 'bob'}", "it is s3cret"),
    "bytes in a dict repr": ("{'token': b'raw-t0ken-bytes'}", "raw-t0ken-bytes"),
    "escaped quote inside": ('{"password": "a\\"quoted\\" pass"}', "quoted"),
    "json inside json": ('{"args": "{\\"password\\": \\"two words\\"}"}', "two words"),
}


@pytest.mark.parametrize(("text", "secret"), SERIALISED.values(), ids=list(SERIALISED))
def test_secrets_in_serialised_mappings_are_redacted_whole(
    spans: CapturedSpans, text: str, secret: str
) -> None:
    attrs = recorded(spans, **{"agent_trace.tool.arguments": text})

    scrubbed = attrs["agent_trace.tool.arguments"]
    assert secret not in scrubbed
    assert "[REDACTED]" in scrubbed
    assert list(attrs["agent_trace.scrubbed"]) == ["agent_trace.tool.arguments"]


def test_json_text_stays_json_after_scrubbing(spans: CapturedSpans) -> None:
    text = json.dumps({"password": 'pa"ss word', "user": "bob", "max_tokens": 5})

    attrs = recorded(spans, **{"agent_trace.tool.arguments": text})

    assert json.loads(attrs["agent_trace.tool.arguments"]) == {
        "password": REDACTED,
        "user": "bob",
        "max_tokens": 5,
    }


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://shop.example.invalid/cart;jsessionid=A1B2C3D4E5.node7?item=1", "?item=1"),
        ("https://shop.example.invalid/cart;JSESSIONID=A1B2C3D4E5.node7", "/cart;JSESSIONID="),
        ("https://shop.example.invalid/a;jsessionid=A1B2C3D4E5.node7/b", "/b"),
        ("https://shop.example.invalid/index.php?PHPSESSID=A1B2C3D4E5.node7&page=2", "&page=2"),
        ("https://shop.example.invalid/c;jsessionid=A1B2C3D4E5?n=1&token=A1B2C3D4E5", "?n=1&"),
    ],
    ids=["path-parameter", "upper-case", "path-goes-on", "php-query", "then-a-token"],
)
def test_session_ids_in_urls_are_redacted(spans: CapturedSpans, url: str, kept: str) -> None:
    attrs = recorded(spans, **{"url.full": url})

    assert "A1B2C3D4E5" not in attrs["url.full"]
    assert kept in attrs["url.full"]
    assert "shop.example.invalid" in attrs["url.full"]


def test_secrets_inside_string_arrays_are_redacted(spans: CapturedSpans) -> None:
    attrs = recorded(spans, **{"agent_trace.contacts": ["ops", "bob@example.org"]})

    assert attrs["agent_trace.contacts"][0] == "ops"
    assert "bob@example.org" not in attrs["agent_trace.contacts"][1]


def test_clean_spans_are_not_marked(spans: CapturedSpans) -> None:
    attrs = recorded(spans, **{"agent_trace.note": "nothing to hide: a=b, 10:30"})

    assert attrs["agent_trace.note"] == "nothing to hide: a=b, 10:30"
    assert "agent_trace.scrubbed" not in attrs


def test_span_names_keep_their_text(spans: CapturedSpans) -> None:
    # Names are low-cardinality by design; scrubbing them would break grouping in every sink.
    with agent_trace.session("review"):
        pass

    assert spans.one("invoke_workflow review")


def test_exception_message_and_stacktrace_are_scrubbed_without_content_capture(
    spans: CapturedSpans,
) -> None:
    message = "login failed for jane@example.org with token=abcdef123456"

    with pytest.raises(PermissionError), agent_trace.session("review"):
        raise PermissionError(message)

    span = spans.one("invoke_workflow review")
    [event] = span.events
    for value in event.attributes.values():
        assert "jane@example.org" not in str(value)
        assert "abcdef123456" not in str(value)
    assert event.attributes["exception.type"] == "PermissionError"
    assert "jane@example.org" not in (span.status.description or "")


def test_exception_message_keeps_its_text_but_not_its_secrets_with_content_capture() -> None:
    message = "login failed for jane@example.org with token=abcdef123456"

    with capture_spans(capture_content=True) as spans:
        with pytest.raises(PermissionError), agent_trace.session("review"):
            raise PermissionError(message)

        span = spans.one("invoke_workflow review")
        text = span.events[0].attributes["exception.message"]
        assert "login failed for" in text
        assert "jane@example.org" not in text
        assert "abcdef123456" not in text
        assert "jane@example.org" not in (span.status.description or "")


def test_ids_and_times_survive_scrubbing(spans: CapturedSpans) -> None:
    with agent_trace.session("review") as s, s.turn("ethics") as turn:
        turn.set_attribute("app.password", "x")

    turn_span = spans.one("invoke_agent ethics")
    root = spans.one("invoke_workflow review")
    assert turn_span.attributes["app.password"] == REDACTED
    assert f"{turn_span.context.trace_id:032x}" == s.trace_id
    assert spans.parent(turn_span) is root
    assert turn_span.start_time and turn_span.end_time
    assert turn_span.end_time >= turn_span.start_time


def test_secrets_inside_maps_and_mixed_arrays_are_redacted(spans: CapturedSpans) -> None:
    # Set through the raw OpenTelemetry API, which keeps maps and mixed arrays as they are.
    with agent_trace.session("review") as s:
        s.span.set_attributes(
            {
                "http.request.headers": {"authorization": "Bearer abcdefgh12345678", "x": "1"},
                "app.contacts": [1, "bob@example.org"],
            }
        )

    attrs = spans.one("invoke_workflow review").attributes
    headers = dict(attrs["http.request.headers"])
    assert headers["authorization"] == "[REDACTED]"
    assert headers["x"] == "1"
    assert "bob@example.org" not in str(attrs["app.contacts"])
    assert attrs["app.contacts"][0] == 1
    assert {"http.request.headers", "app.contacts"} <= set(attrs["agent_trace.scrubbed"])


def test_a_key_that_is_not_text_is_judged_by_its_text(spans: CapturedSpans) -> None:
    # Only a write past the SDK's checks (its stored dict) can make such a key; the span must
    # still be scrubbed and delivered, not counted as `scrub_failed`.
    before = agent_trace.dropped_spans()
    with agent_trace.session("review") as s:
        s.span._attributes._dict[7] = "seven"  # type: ignore[attr-defined]
        s.span._attributes._dict["app.token"] = "abcdefgh12345678"  # type: ignore[attr-defined]

    attrs = spans.one("invoke_workflow review").attributes
    assert attrs["7"] == "seven"  # every sink takes text keys
    assert 7 not in attrs
    assert attrs["app.token"] == "[REDACTED]"
    assert agent_trace.dropped_spans() == before
