"""Smuggling secrets past the scrubber, checked in the bytes every sink receives: the local file,
the OTLP/HTTP request bodies at a recorder, and the Sentry envelopes at a recorder standing in
for Sentry (both recorders on 127.0.0.1, started by the test).
"""

# ruff: noqa: SIM117

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode

import agent_trace
from tests.adversarial._support import SECRET, captured
from tests.backends.otlp_recorder import OtlpHttpRecorder

Attack = Callable[[], None]


@dataclass(frozen=True)
class Exported:
    local_file: bytes
    otlp: bytes
    sentry: bytes

    def leaks(self, secret: str = SECRET) -> list[str]:
        """The sinks whose bytes contain `secret`."""
        needle = secret.encode()
        return [
            name
            for name, data in (
                ("file", self.local_file),
                ("otlp", self.otlp),
                ("sentry", self.sentry),
            )
            if needle in data
        ]


@pytest.fixture
def recorders() -> Iterator[tuple[OtlpHttpRecorder, OtlpHttpRecorder]]:
    with OtlpHttpRecorder() as otlp, OtlpHttpRecorder() as sentry:
        yield otlp, sentry


@pytest.fixture
def export(
    tmp_path: Path, recorders: tuple[OtlpHttpRecorder, OtlpHttpRecorder]
) -> Callable[..., Exported]:
    otlp, sentry = recorders

    def run(attack: Attack, *, capture_content: bool = False) -> Exported:
        path = tmp_path / "traces.jsonl"
        agent_trace.configure(
            "adversarial",
            otlp_endpoint=otlp.traces_url,
            otlp_protocol="http",
            sentry_dsn=f"http://abcdef0123456789@127.0.0.1:{sentry.port}/1",
            local_file=True,
            local_path=path,
            capture_content=capture_content,
            alert_policy=False,
            _env={},
        )
        try:
            with sentry_sdk.isolation_scope(), contextlib.suppress(Exception):
                attack()
        finally:
            agent_trace.shutdown(timeout_s=10)
        assert otlp.requests, "nothing reached the OTLP recorder"
        assert sentry.requests, "nothing reached the Sentry recorder"
        return Exported(
            local_file=path.read_bytes(),
            otlp=b"".join(r.content for r in otlp.requests),
            sentry=b"".join(r.content for r in sentry.requests),
        )

    return run


def in_session(**attributes: Any) -> Attack:
    def attack() -> None:
        with agent_trace.session("review", **attributes) as session:
            with session.turn("ethics"):
                pass

    return attack


# -- what the scrubber withstood ------------------------------------------------------------------


def _every_documented_channel() -> None:
    with agent_trace.session(
        "review",
        password=SECRET,
        api_key=SECRET,
        authToken=SECRET,
        sentry_dsn=SECRET,
        **{"x-api-key": SECRET, "Client-Secret": SECRET, "user.credentials": SECRET},
    ) as session:
        session.set_attribute("callback", f"https://agent:{SECRET}@127.0.0.1/hook")
        session.set_attribute("signed", f"https://127.0.0.1/o?sig={SECRET}&x=1")
        session.set_attribute("header", f"Authorization: Bearer {SECRET}")
        session.set_attribute("config", f"password={SECRET}")
        session.set_attribute("contact", f"{SECRET}@example.com")
        session.set_attribute("openai", f"sk-{SECRET}{SECRET}")
        session.set_attribute("listed", [f"token={SECRET} x", f"{SECRET}@example.org"])
        session.span.add_event("login", {"password": SECRET, "note": f"Bearer {SECRET}"})
        session.span.set_status(Status(StatusCode.ERROR, f"failed with password={SECRET}"))
        tracer = trace.get_tracer("adversarial")
        linked = tracer.start_span(
            "linked",
            links=[
                Link(session.span.get_span_context(), {"token": SECRET, "who": f"{SECRET}@x.io"})
            ],
        )
        linked.end()
        sentry_sdk.add_breadcrumb(
            message=f"retry token={SECRET}", data={"password": SECRET, "inner": {"api_key": SECRET}}
        )
        sentry_sdk.set_tag("note", f"Bearer {SECRET}")
        sentry_sdk.set_extra("blob", {"client_secret": SECRET, "list": [f"{SECRET}@example.com"]})
        sentry_sdk.set_user({"email": f"{SECRET}@example.com", "id": "1"})
        with session.consensus_round("vote") as rnd:
            rnd.vote("ethics", "approve", rationale=f"because {SECRET}")
        with session.send_message("ethics", "legal", message_type="note", content=SECRET):
            pass
        with session.turn("legal"):
            raise agent_trace.ConstitutionalViolationError(f"leaked {SECRET}", "privacy")


def test_documented_channels_reach_no_sink(export: Callable[..., Exported]) -> None:
    exported = export(_every_documented_channel)
    assert exported.leaks() == []
    assert b"agent_trace.scrubbed" in exported.local_file
    assert b"[REDACTED" in exported.sentry
    assert b"[content not captured]" in exported.sentry
    # The Sentry channels were really exercised: the event carries them, scrubbed.
    for field in (b'"breadcrumbs"', b'"tags"', b'"extra"', b'"user"', b"[REDACTED:email]"):
        assert field in exported.sentry


def test_exception_message_never_leaves_without_content_capture(
    export: Callable[..., Exported],
) -> None:
    def attack() -> None:
        with agent_trace.session("review"):
            raise ValueError(f"proposal text {SECRET} that must stay home")

    assert export(attack).leaks() == []


def test_content_capture_still_scrubs_patterns(export: Callable[..., Exported]) -> None:
    def attack() -> None:
        with agent_trace.session("review") as session:
            with session.consensus_round("vote") as rnd:
                rnd.vote("ethics", "approve", rationale=f"see https://a:{SECRET}@127.0.0.1/x")
            raise ValueError(f"token={SECRET}")

    assert export(attack, capture_content=True).leaks() == []


# -- what got through -----------------------------------------------------------------------------

NESTED = {
    "password in a mapping": {"request": {"password": SECRET}},
    "authorization header map": {"headers": {"Authorization": SECRET}},
    "api key two levels down": {"call": {"tool": {"x-api-key": SECRET}}},
}


@pytest.mark.parametrize("attributes", NESTED.values(), ids=list(NESTED))
def test_secret_keys_inside_mappings_are_redacted(
    export: Callable[..., Exported], attributes: dict[str, Any]
) -> None:
    assert export(in_session(**attributes)).leaks() == []


@pytest.mark.parametrize(
    "key", ["passwords", "db_passwords", "sessionkey", "clientsecret", "accesstoken", "authtoken"]
)
def test_secret_key_spellings_are_redacted(export: Callable[..., Exported], key: str) -> None:
    assert export(in_session(**{key: SECRET})).leaks() == []


VALUES = {
    "url credentials without user": f"redis://:{SECRET}@127.0.0.1:6379/0",
    "refresh_token query parameter": f"https://127.0.0.1/cb?refresh_token={SECRET}",
    "aws signed url": f"https://127.0.0.1/o?X-Amz-Date=1&X-Amz-Signature={SECRET}",
    "client_secret assignment": f"client_secret={SECRET}",
    "refresh_token assignment": f"refresh_token={SECRET}",
    "JSON text": json.dumps({"user": "bob", "password": f"two words {SECRET}"}),
    "a dict's repr": repr({"api_key": f"{SECRET} x", "user": "bob"}),
    "JSON inside JSON": json.dumps({"arguments": json.dumps({"token": f"a {SECRET}"})}),
    "session id in a path parameter": f"https://127.0.0.1/cart;jsessionid={SECRET}?item=1",
}


@pytest.mark.parametrize("value", VALUES.values(), ids=list(VALUES))
def test_secret_shapes_in_values_are_scrubbed(export: Callable[..., Exported], value: str) -> None:
    assert export(in_session(note=value)).leaks() == []


def _chained() -> None:
    with agent_trace.session("review"):
        try:
            raise KeyError(f"proposal {SECRET}")
        except KeyError as cause:
            raise RuntimeError("review failed") from cause


def _implicit() -> None:
    with agent_trace.session("review"):
        try:
            raise KeyError(f"proposal {SECRET}")
        except KeyError:
            raise RuntimeError("review failed")  # noqa: B904 - the implicit context is the point


def _noted() -> None:
    with agent_trace.session("review"):
        error = RuntimeError("review failed")
        error.add_note(f"while reading proposal {SECRET}")
        raise error


def _grouped() -> None:
    with agent_trace.session("review"):
        try:
            raise KeyError(f"proposal {SECRET}")
        except KeyError as cause:
            member = ValueError(f"member {SECRET}")
            member.add_note(f"while reading {SECRET}")
            member.__cause__ = cause
            group = ExceptionGroup  # noqa: F821 - a builtin from Python 3.11 (skipped before)
            inner = group(f"inner {SECRET}", [member, TypeError(SECRET)])
            raise group(f"review failed {SECRET}", [inner, OSError(SECRET)]) from None


CHAINS = [
    pytest.param(_chained, id="cause"),
    pytest.param(_implicit, id="context"),
    pytest.param(_noted, id="note"),
    pytest.param(
        _grouped,
        id="nested exception groups",
        marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups: 3.11+"),
    ),
]


@pytest.mark.parametrize("attack", CHAINS)
def test_exception_chain_messages_never_leave_without_content_capture(
    export: Callable[..., Exported], attack: Attack
) -> None:
    assert export(attack).leaks() == []


def test_short_exception_message_keeps_the_stack_trace_readable() -> None:
    with captured() as spans:
        with pytest.raises(ValueError):
            with agent_trace.session("review"):
                raise ValueError("e")
        [session] = spans.sessions()
        [event] = [e for e in session.events if e.name == "exception"]
        stack = event.attributes["exception.stacktrace"]
        assert "Traceback (most recent call last)" in stack
        assert "test_secrets.py" in stack


def test_event_names_are_scrubbed(export: Callable[..., Exported]) -> None:
    def attack() -> None:
        with agent_trace.session("review") as session:
            session.span.add_event(f"login by {SECRET}@example.com")
            session.span.add_event(f"Authorization: Bearer {SECRET}")

    assert export(attack).leaks() == []


def test_violation_event_is_scrubbed_when_the_app_initialised_sentry_first(
    recorders: tuple[OtlpHttpRecorder, OtlpHttpRecorder],
) -> None:
    _, sentry = recorders
    dsn = f"http://abcdef0123456789@127.0.0.1:{sentry.port}/1"
    sentry_sdk.init(dsn=dsn, default_integrations=False)
    try:
        agent_trace.configure(
            "adversarial", sentry_dsn=dsn, local_file=False, alert_policy=False, _env={}
        )
        with sentry_sdk.isolation_scope():
            sentry_sdk.add_breadcrumb(message=f"retry token={SECRET}")
            with pytest.raises(agent_trace.ConstitutionalViolationError):
                with agent_trace.session("review"):
                    raise agent_trace.ConstitutionalViolationError(f"leaked {SECRET}", "privacy")
        agent_trace.shutdown(timeout_s=5)
        sentry_sdk.flush(timeout=5)
        sent = b"".join(r.content for r in sentry.requests)
        assert b"ConstitutionalViolationError" in sent
        assert SECRET.encode() not in sent
    finally:
        agent_trace.shutdown(timeout_s=2)
        sentry_sdk.get_client().close(timeout=2)
        sentry_sdk.get_global_scope().set_client(None)
