"""Agent messages: a PRODUCER send and a CONSUMER process, linked rather than parented."""

from __future__ import annotations

import asyncio

from opentelemetry.trace import SpanKind

import agent_trace
from agent_trace.testing import CapturedSpans, capture_spans


def test_send_and_process_are_linked_producer_and_consumer(
    agent_trace_spans: CapturedSpans,
) -> None:
    async def main() -> None:
        mailbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        async with agent_trace.session("review") as s:
            async with s.turn("ethics"):
                with s.send_message(
                    "ethics", "legal", message_type="concern", content="secret concern text"
                ) as msg:
                    await mailbox.put(msg.headers())
            async with s.turn("legal"):
                headers = await mailbox.get()
                with s.process_message("legal", headers, message_type="concern"):
                    pass

    asyncio.run(main())
    send = agent_trace_spans.one("send legal")
    process = agent_trace_spans.one("process legal")

    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert agent_trace_spans.parent(send).name == "invoke_agent ethics"
    assert agent_trace_spans.parent(process).name == "invoke_agent legal"
    [link] = process.links
    assert link.context.span_id == send.context.span_id
    assert send.attributes["agent_trace.message.type"] == "concern"
    assert send.attributes["messaging.destination.name"] == "legal"
    assert "agent_trace.message.content" not in send.attributes


def test_message_content_is_kept_only_with_content_capture() -> None:
    with capture_spans(capture_content=True) as spans:
        session = agent_trace.session("review")
        with (
            session,
            session.send_message("ethics", "legal", message_type="note", content="see principle 4"),
        ):
            pass
    assert spans.one("send legal").attributes["agent_trace.message.content"] == "see principle 4"


def test_process_accepts_the_send_handle_and_tolerates_garbage_headers(
    agent_trace_spans: CapturedSpans,
) -> None:
    with agent_trace.session("review") as s:
        with s.send_message("ops", "ethics", message_type="fyi") as msg:
            pass
        with s.process_message("ethics", msg):
            pass
        with s.process_message("ethics", {"traceparent": "garbage"}):
            pass

    linked, unlinked = agent_trace_spans.find("process ethics")
    assert linked.links[0].context.span_id == msg.span.get_span_context().span_id
    assert list(unlinked.links) == []
