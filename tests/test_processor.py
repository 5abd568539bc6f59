"""PromptWallSpanProcessor: what LLM calls inherit, and what ordinary spans cost (nothing leaves)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Dict, List

import httpx
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from promptwall_otel import PromptWallSpanProcessor
from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY


def chat(tracer: Any, **extra: Any) -> None:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                  "gen_ai.response.id": f"chatcmpl-{uuid.uuid4().hex}", **extra}  # fmt: skip
    with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attributes):
        pass


def records(backend: LocalBackend, tmp_path: Path, scenario: Any) -> List[Dict[str, Any]]:
    provider = TracerProvider()
    processor = PromptWallSpanProcessor(api_key=API_KEY, base_url=backend.url, spool_dir=str(tmp_path))
    provider.add_span_processor(processor)
    marker = uuid.uuid4().hex
    token = context.attach(baggage.set_baggage("promptwall.metadata.run", marker))
    try:
        scenario(provider.get_tracer("test"))
    finally:
        context.detach(token)
    provider.shutdown()
    response = httpx.get(backend.url + "/api/console/requests", params={"metadata.run": marker},
                         headers={"X-API-Key": API_KEY})  # fmt: skip
    return list(reversed(response.json()["requests"]))


def test_ids_set_on_a_parent_after_its_start_reach_the_call(backend: LocalBackend, tmp_path: Path) -> None:
    def scenario(tracer: Any) -> None:
        with tracer.start_as_current_span("request") as request:
            request.set_attribute("session.id", "late-session")  # set after start, before the call
            with tracer.start_as_current_span("agent", attributes={"user.id": "u-7", "promptwall.use_case": "triage"}):
                chat(tracer)

    (record,) = records(backend, tmp_path, scenario)
    assert (record["session_id"], record["end_user_id"], record["use_case"]) == ("late-session", "u-7", "triage")


def test_nearest_ancestor_wins_and_baggage_comes_last(backend: LocalBackend, tmp_path: Path) -> None:
    def scenario(tracer: Any) -> None:
        token = context.attach(baggage.set_baggage("session.id", "from-baggage"))
        try:
            with tracer.start_as_current_span("outer", attributes={"promptwall.team_id": "team-outer"}):
                with tracer.start_as_current_span("inner", attributes={"promptwall.team_id": "team-inner"}):
                    chat(tracer)
            chat(tracer, **{"gen_ai.conversation.id": "own-conversation"})
        finally:
            context.detach(token)

    first, second = records(backend, tmp_path, scenario)
    assert first["team_id"] == "team-inner" and first["session_id"] == "from-baggage"
    assert second["session_id"] == "own-conversation", "the span's own attribute wins over baggage"


def test_ordinary_spans_leave_nothing_behind(backend: LocalBackend, tmp_path: Path) -> None:
    provider = TracerProvider()
    processor = PromptWallSpanProcessor(api_key=API_KEY, base_url=backend.url, spool_dir=str(tmp_path))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(100):
        with tracer.start_as_current_span("GET /", attributes={"http.route": "/"}):
            with tracer.start_as_current_span("SELECT", attributes={"db.system": "postgresql"}):
                pass
    assert len(processor._contexts) == 0 and len(processor._queue) == 0
    provider.shutdown()
    assert processor.stats()["exported"] == 0


def test_a_trace_is_forgotten_when_its_request_span_ends(backend: LocalBackend, tmp_path: Path) -> None:
    """LLM calls under a request span: the ledger drops their trace when the request ends, not minutes later."""
    provider = TracerProvider()
    processor = PromptWallSpanProcessor(api_key=API_KEY, base_url=backend.url, spool_dir=str(tmp_path))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    ledger = processor.exporter._ledger
    with tracer.start_as_current_span("GET /chat", attributes={"http.route": "/chat"}):
        chat(tracer)
        chat(tracer)
        assert processor.force_flush()
        assert len(ledger) == 1, "the request is still running: its trace is remembered"
    assert processor.force_flush()
    assert len(ledger) == 0
    # A request that came with a traceparent: its server span is the local root.
    remote = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with tracer.start_as_current_span("GET /remote", context=trace.set_span_in_context(NonRecordingSpan(remote))):
        chat(tracer)
        chat(tracer)
    assert processor.force_flush()
    assert len(ledger) == 0 and len(processor._open_traces) == 0
    provider.shutdown()
    assert processor.stats()["exported"] == 4
