"""PromptWallSpanProcessor: what LLM calls inherit, and what ordinary spans cost (nothing leaves)."""

from __future__ import annotations

import os
import subprocess
import sys
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
            chat(tracer, **{"session.id": "own-session"})
        finally:
            context.detach(token)

    first, second = records(backend, tmp_path, scenario)
    assert first["team_id"] == "team-inner" and first["session_id"] == "from-baggage"
    assert second["session_id"] == "own-session", "the span's own attribute wins over baggage"


def test_the_applications_session_beats_a_generated_conversation_id(backend: LocalBackend, tmp_path: Path) -> None:
    """An agent framework that sets a fresh gen_ai.conversation.id on its agent and chat spans every run
    does not replace the session the application set on its request span or in baggage."""

    def agent_run(tracer: Any, run: str) -> None:
        with tracer.start_as_current_span("invoke_agent helper", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helper",
                "gen_ai.conversation.id": run}):  # fmt: skip
            chat(tracer, **{"gen_ai.conversation.id": run})

    def scenario(tracer: Any) -> None:
        with tracer.start_as_current_span("POST /chat", attributes={"session.id": "app-session"}):
            agent_run(tracer, "run-1f3a")
        token = context.attach(baggage.set_baggage("promptwall.session_id", "bag-session"))
        try:
            agent_run(tracer, "run-9c2e")
        finally:
            context.detach(token)
        agent_run(tracer, "run-77d0")  # no session from the application: the conversation id is the session

    under_span, under_baggage, alone = records(backend, tmp_path, scenario)
    assert under_span["session_id"] == "app-session"
    assert under_span["metadata"]["gen_ai"]["conversation_id"] == "run-1f3a"
    assert under_baggage["session_id"] == "bag-session"
    assert under_baggage["metadata"]["gen_ai"]["conversation_id"] == "run-9c2e"
    assert alone["session_id"] == "run-77d0" and "conversation_id" not in alone["metadata"]["gen_ai"]


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


# A real instrumentation that starts its span bare and sets every gen_ai.* attribute when the call
# finishes: the official OpenAI one in its latest-conventions mode (opentelemetry-util-genai). It reads
# its settings at import, hence a process of its own.
_LATE_GENAI_APP = """
import os, sys
os.environ.update(OTEL_SEMCONV_STABILITY_OPT_IN="gen_ai_latest_experimental",
                  OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="span_only")
import openai
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
import promptwall_otel

backend_url, llm_url, spool_dir, marker = sys.argv[1:5]
provider = TracerProvider()
trace.set_tracer_provider(provider)
promptwall_otel.configure(api_key="%s", base_url=backend_url, spool_dir=spool_dir)
OpenAIInstrumentor().instrument()
client = openai.OpenAI(base_url=llm_url + "/v1", api_key="sk-fake", max_retries=0)
ctx = baggage.set_baggage("session.id", "bag-session")
ctx = baggage.set_baggage("user.id", "bag-user", ctx)
ctx = baggage.set_baggage("promptwall.metadata.run", marker, ctx)
token = context.attach(ctx)
stream = client.chat.completions.create(model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
                                        messages=[{"role": "user", "content": "Stream a greeting please"}])
print("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
context.detach(token)
provider.shutdown()
""" % API_KEY


def test_baggage_reaches_a_call_whose_span_becomes_genai_after_it_started(
    backend: LocalBackend, fake_llm: str, tmp_path: Path
) -> None:
    """The span has no gen_ai.* attribute at start (so on_start cannot know it is an LLM call); the
    baggage around it must still reach its record."""
    marker = uuid.uuid4().hex
    done = subprocess.run([sys.executable, "-c", _LATE_GENAI_APP, backend.url, fake_llm, str(tmp_path), marker],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "Echo: Stream a greeting please"
    response = httpx.get(backend.url + "/api/console/requests", params={"metadata.run": marker},
                         headers={"X-API-Key": API_KEY})  # fmt: skip
    (record,) = response.json()["requests"]
    assert (record["session_id"], record["end_user_id"]) == ("bag-session", "bag-user")
    assert record["prompt_tokens"] == 4 and record["answer"] == "Echo: Stream a greeting please"


def test_baggage_reaches_a_span_that_becomes_genai_later_and_its_children(backend: LocalBackend, tmp_path: Path) -> None:
    """Without an instrumentation: a bare span that gets gen_ai.* after start, under a child and as a root."""

    def scenario(tracer: Any) -> None:
        token = context.attach(baggage.set_baggage("promptwall.user_id", "u-bag", baggage.set_baggage("session.id", "s-bag")))
        try:
            with tracer.start_as_current_span("outer"):
                with tracer.start_as_current_span("chat") as span:  # a child, GenAI only once it ends
                    span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"})
            with tracer.start_as_current_span("chat") as span:  # a root, same
                span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                                     "session.id": "own-session"})  # fmt: skip
        finally:
            context.detach(token)

    child, root = records(backend, tmp_path, scenario)
    assert (child["session_id"], child["end_user_id"]) == ("s-bag", "u-bag")
    assert (root["session_id"], root["end_user_id"]) == ("own-session", "u-bag"), "the span's own attribute wins"
