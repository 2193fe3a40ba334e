"""Secrets and content never leave the process: checked in the raw bytes every sink received.

One traced run sends to the local file, an OTLP/HTTP recorder and Sentry (the real Spotlight
sidecar: transactions, error events and breadcrumbs), with content capture off. The bytes are
then searched for every secret and marker that went in.
"""

# ruff: noqa: SIM117

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sentry_sdk

import agent_trace
from tests.backends.otlp_recorder import OtlpHttpRecorder, attributes_of
from tests.backends.spotlight import Spotlight
from tests.reliability._support import file_spans, spotlight_bytes

pytestmark = pytest.mark.integration

PEER_USER = "alice_peer_user"
PEER_PASSWORD = "S3cr3tPeerPassw0rd"
SIGNATURE = "SIGabc123def456"
QUERY_TOKEN = "TOKxyz789uvw"
PEER_URL = f"https://{PEER_USER}:{PEER_PASSWORD}@host.invalid/x?sig={SIGNATURE}&token={QUERY_TOKEN}"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sflKxwRJSMeKKF2QT4fwpMeJf36"
EMAIL = "alice.smith.reliability@example.org"
API_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx"
EXCEPTION_PASSWORD = "hunter2-Sup3rSecret"

SECRETS = [
    PEER_USER,
    PEER_PASSWORD,
    SIGNATURE,
    QUERY_TOKEN,
    BEARER,
    EMAIL,
    API_KEY,
    EXCEPTION_PASSWORD,
]


@dataclass
class Exported:
    file: bytes
    otlp: bytes
    sentry: bytes

    def leaks(self, needle: str) -> list[str]:
        raw = needle.encode()
        return [name for name, blob in vars(self).items() if raw in blob]


@pytest.fixture
def all_sinks(
    otlp_http_recorder: OtlpHttpRecorder, spotlight: Spotlight, tmp_path: Path
) -> Iterator[Path]:
    path = tmp_path / "traces.jsonl"
    agent_trace.configure(
        "secrets-test",
        otlp_endpoint=otlp_http_recorder.traces_url,
        otlp_protocol="http",
        sentry_dsn=spotlight.dsn,
        local_path=path,
        capture_content=False,
        _env={},
    )
    yield path
    agent_trace.shutdown(timeout_s=5)


def collect(path: Path, recorder: OtlpHttpRecorder, spotlight: Spotlight, events: int) -> Exported:
    assert agent_trace.force_flush(timeout_s=10)
    envelopes = spotlight.wait_for(
        lambda envs: (
            sum(len(e.payloads("event")) for e in envs) >= events
            and any(e.payloads("transaction") for e in envs)
        ),
        timeout_s=15,
    )
    return Exported(
        file=path.read_bytes(),
        otlp=b"\n".join(r.content for r in recorder.requests),
        sentry=spotlight_bytes(spotlight, envelopes),
    )


# -- 12. secrets and personal data -----------------------------------------------------------


def test_credentials_keys_addresses_and_passwords_reach_no_sink(
    all_sinks: Path, otlp_http_recorder: OtlpHttpRecorder, spotlight: Spotlight
) -> None:
    with agent_trace.session("review", session_id="secrets") as s:
        # An agent calls a peer: the URL recorded as an HTTP client instrumentation would.
        with s.turn("legal", remote=True) as call:
            call.set_attribute("url.full", PEER_URL)
            call.set_attribute("http.request.header.authorization", [f"Bearer {BEARER}"])
            call.set_attribute("agent_trace.turn.note", f"escalate to {EMAIL} with {API_KEY}")
            sentry_sdk.add_breadcrumb(
                category="http",
                message=f"GET {PEER_URL}",
                data={"url": PEER_URL, "authorization": f"Bearer {BEARER}"},
            )
        with pytest.raises(ConnectionError):
            with s.turn("ops"):
                raise ConnectionError(f"login to {PEER_URL} failed: password={EXCEPTION_PASSWORD}")
        with pytest.raises(agent_trace.ConstitutionalViolationError):
            with s.turn("ethics"):
                raise agent_trace.ConstitutionalViolationError(
                    f"shared {EMAIL} and password={EXCEPTION_PASSWORD}",
                    violation_type="privacy",
                    severity="high",
                )

    exported = collect(all_sinks, otlp_http_recorder, spotlight, events=1)

    assert {secret: exported.leaks(secret) for secret in SECRETS} == {s: [] for s in SECRETS}
    # What was removed is marked, and the rest of the value kept its shape.
    [call_span] = [x for x in file_spans(all_sinks) if x.name == "invoke_agent legal"]
    marked = set(call_span.attributes["agent_trace.scrubbed"])
    assert {"url.full", "http.request.header.authorization", "agent_trace.turn.note"} <= marked
    assert call_span.attributes["url.full"].startswith("https://[REDACTED:credentials]@host")
    [recorded] = [x for x in otlp_http_recorder.spans() if x.span_id.hex() == call_span.span_id]
    assert set(attributes_of(recorded)["agent_trace.scrubbed"]) == marked
    # The error still arrived, only without its secrets.
    assert b"ConstitutionalViolationError" in exported.sentry


# -- 13. content capture off -----------------------------------------------------------------


def test_content_markers_appear_in_no_exported_byte(
    all_sinks: Path, otlp_http_recorder: OtlpHttpRecorder, spotlight: Spotlight
) -> None:
    marker = f"MARKER{uuid.uuid4().hex}"
    with agent_trace.session(
        "review", session_id="content", **{"agent_trace.proposal.content": f"proposal {marker}"}
    ) as s:
        with s.turn("researcher") as turn:
            turn.set_attribute("gen_ai.tool.call.arguments", {"query": marker, "limit": 3})
            turn.set_attribute("gen_ai.input.messages", [f"user: {marker}"])
        with s.consensus_round("majority", participants=["a", "b"]) as rnd:
            rnd.vote("a", "approve", rationale=f"because {marker}")
            with rnd.voter("b") as voter:
                voter.cast("reject", rationale=f"since {marker}")
        with pytest.raises(agent_trace.ConstitutionalViolationError):
            with s.policy_check("privacy"):
                raise agent_trace.ConstitutionalViolationError(
                    f"the proposal says {marker}", violation_type="privacy", severity="high"
                )
        with pytest.raises(RuntimeError):
            with s.turn("ops"):
                raise RuntimeError(f"tool failed on {marker}")

    exported = collect(all_sinks, otlp_http_recorder, spotlight, events=1)

    assert exported.leaks(marker) == []
    # The spans themselves did arrive, with the content keys marked as withheld.
    names = {x.name for x in file_spans(all_sinks)}
    assert {"vote a", "vote b", "invoke_agent researcher", "policy_check privacy"} <= names
    assert b"invoke_agent researcher" in exported.otlp
    assert b"policy_check privacy" in exported.sentry


# -- found by attacking the finished library -----------------------------------------------


def test_link_attributes_are_scrubbed_like_span_attributes() -> None:
    from opentelemetry import trace

    from agent_trace.testing import capture_spans

    with capture_spans() as captured:
        with agent_trace.session("review") as s:
            s.span.add_link(
                trace.SpanContext(1, 2, is_remote=True),
                {"peer.auth.token": BEARER, "note": f"from {EMAIL}", "peer.url": PEER_URL},
            )
    [link] = captured.one("invoke_workflow review").links
    values = " ".join(str(v) for v in link.attributes.values())
    assert [secret for secret in SECRETS if secret in values] == []
    assert link.attributes["peer.auth.token"] == "[REDACTED]"
