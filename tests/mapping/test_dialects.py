"""Every producer dialect and semconv version, written from the SPECIFICATIONS (not from captures).

Sources are ``docs/research/semconv-check.md`` (section numbers in the comments) for the attribute
names and ``docs/mapping.md`` for what PromptWall makes of them (field priorities, request_id,
answer form). Each case is a span as a spec-conformant producer emits it, plus the
record fields the mapping must produce. Fields not listed in a case must be
absent (None); ``status`` defaults to "ok".
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Mapping, Optional, Sequence

import pytest

from promptwall_otel.mapping import (
    Classification, EventView, LogView, MappingOptions, SpanClass, SpanView, build_event, classify,
)  # fmt: skip
from promptwall_otel.record import validate_event

TRACE = 0x0AF7651916CD43DD8448EB211C80319C
SPAN = 0xB7AD6B7169203331
START = 1_760_000_000_000_000_000  # 2025-10-09T08:53:20Z
END = START + 1_250_000_000
OTEL_ID = f"otel-{TRACE:032x}-{SPAN:016x}"
GEN_ID = re.compile(r"^gen-[0-9a-f]{40}$")
RESP_ID = "chatcmpl-9J3uIL87gldCFtiIbyaOvTeYBRA3l"  # >= 16 chars: keyed as gen-<hash>

RECORD_FIELDS = ("provider", "model", "prompt_tokens", "completion_tokens", "total_tokens", "status",
                 "session_id", "end_user_id", "prompt", "answer", "error_code")  # fmt: skip
GEN_AI_FIELDS = ("operation", "finish_reasons", "response_id")


# --- helpers (also used by test_odd_inputs.py) -------------------------------------------


def js(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def span(attrs: Mapping[str, Any], name: str = "chat", events: Sequence[EventView] = (),
         resource: Optional[Mapping[str, Any]] = None, status: str = "UNSET", message: Optional[str] = None,
         kind: str = "CLIENT", span_id: int = SPAN, trace_id: int = TRACE, start: int = START,
         end: int = END, scope: str = "") -> SpanView:  # fmt: skip
    return SpanView(name, trace_id, span_id, start, end, dict(attrs), kind=kind, status_code=status,
                    status_message=message, events=list(events), resource=resource, scope_name=scope)  # fmt: skip


def event(name: str, **attrs: Any) -> EventView:
    return EventView(name, START + 1, attrs)


def log(name: str, body: Any = None, attrs: Optional[Mapping[str, Any]] = None) -> LogView:
    return LogView(TRACE, SPAN, name, body, attrs if attrs is not None else {"gen_ai.system": "openai"}, START + 1)


def parts(role: str, *items: Any, finish: Optional[str] = None) -> Dict[str, Any]:
    """A 1.37+ ChatMessage/OutputMessage; plain strings become text parts."""
    message: Dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": i} if isinstance(i, str) else i
                                                       for i in items]}  # fmt: skip
    if finish:
        message["finish_reason"] = finish
    return message


def assert_sane(record: Dict[str, Any]) -> None:
    """Every record any case produces: valid for POST /v1/events and encodable as UTF-8 JSON."""
    assert validate_event(record) == [], validate_event(record)
    json.dumps(record, ensure_ascii=False).encode("utf-8")


def gen_ai(record: Dict[str, Any]) -> Dict[str, Any]:
    return record["metadata"]["gen_ai"]


# --- the table ----------------------------------------------------------------------------------

# 1.37+ conversation shared by several cases.
CALC_INPUT = [
    parts("user", "What is 2+2?"),
    parts("assistant", {"type": "tool_call", "id": "c1", "name": "calc", "arguments": {"expr": "2+2"}}),
    parts("tool", {"type": "tool_call_response", "id": "c1", "response": "4"}),
]
CALC_OUTPUT = [parts("assistant", "2+2 is 4.", finish="stop")]
WEATHER_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
WEATHER_TOOL_CALLS = [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]
SEMCONV_128_SPAN = {
    "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.response.id": RESP_ID,
    "gen_ai.usage.input_tokens": 60, "gen_ai.usage.output_tokens": 14, "gen_ai.conversation.id": "conv-42",
}  # fmt: skip
WEATHER_HISTORY = [
    log("gen_ai.system.message", {"content": "You are terse."}),
    log("gen_ai.user.message", {"content": "Weather in Paris?"}),
    log("gen_ai.assistant.message", {"tool_calls": [WEATHER_CALL]}),  # PYC drops content when tool_calls
    log("gen_ai.tool.message", {"content": "18C, sunny", "id": "call_1"}),
]


def case(case_id: str, view: SpanView, logs: Sequence[LogView] = (), **expected: Any) -> Any:
    return pytest.param(view, list(logs), expected, id=case_id)


CASES = [
    # §1 / §3.1 semconv 1.26: gen_ai.system, prompt/completion_tokens, content span events, no operation name.
    case("semconv-1.26", span({
        "gen_ai.system": "openai", "gen_ai.request.model": "gpt-3.5-turbo", "gen_ai.response.model": "gpt-3.5-turbo-0125",
        "gen_ai.request.temperature": 0.2, "gen_ai.response.id": RESP_ID, "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.prompt_tokens": 12, "gen_ai.usage.completion_tokens": 7,
    }, name="openai.chat", events=[
        event("gen_ai.content.prompt", **{"gen_ai.prompt": js([{"role": "system", "content": "Be brief."},
                                                                {"role": "user", "content": "Say hi"}])}),
        event("gen_ai.content.completion", **{"gen_ai.completion": js([{"role": "assistant", "content": "Hi!"}])}),
    ]), provider="openai", model="gpt-3.5-turbo-0125", prompt_tokens=12, completion_tokens=7, total_tokens=19,
        prompt="Say hi", answer="Hi!", operation="chat", finish_reasons=["stop"], response_id=RESP_ID,
        request_id="gen", request={"temperature": 0.2}),  # fmt: skip
    # 1.27: operation.name, input/output_tokens, error.type (on error), content still span events.
    case("semconv-1.27-error", span({
        "gen_ai.operation.name": "chat", "gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-5-sonnet-20241022",
        "error.type": "rate_limit_error",
    }, name="chat claude-3-5-sonnet-20241022", status="ERROR", message="429 Too Many Requests", events=[
        event("gen_ai.content.prompt", **{"gen_ai.prompt": js([{"role": "user", "content": "Hello?"}])}),
    ]), provider="anthropic", model="claude-3-5-sonnet-20241022", status="error", error_code="rate_limit_error",
        prompt="Hello?", operation="chat", request_id="otel", error={"type": "rate_limit_error",
                                                                      "message": "429 Too Many Requests"}),  # fmt: skip
    case("semconv-1.27-text_completion", span({
        "gen_ai.operation.name": "text_completion", "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-3.5-turbo-instruct", "gen_ai.response.id": "cmpl-short",
        "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 9, "gen_ai.response.finish_reasons": ["length"],
    }, name="text_completion gpt-3.5-turbo-instruct", events=[
        event("gen_ai.content.prompt", **{"gen_ai.prompt": js([{"role": "user", "content": "Once upon a time"}])}),
        event("gen_ai.content.completion", **{"gen_ai.completion": js([{"role": "assistant", "content": "there was"}])}),
    ]), provider="openai", model="gpt-3.5-turbo-instruct", prompt_tokens=5, completion_tokens=9, total_tokens=14,
        prompt="Once upon a time", answer="there was", operation="text_completion", finish_reasons=["length"],
        response_id="cmpl-short", request_id="otel"),  # fmt: skip
    # §3.2 1.28-1.36 per-message LOG records; 1.34 conversation.id; choice with message.tool_calls (PYC form).
    case("semconv-1.28-logs-choice-message.tool_calls",
         span({**SEMCONV_128_SPAN, "gen_ai.response.finish_reasons": ["tool_calls"]}, name="chat gpt-4o"),
         WEATHER_HISTORY[:2] + [log("gen_ai.choice", {"index": 0, "finish_reason": "tool_calls",
                                                       "message": {"tool_calls": [WEATHER_CALL]}})],
         provider="openai", model="gpt-4o-2024-08-06", prompt_tokens=60, completion_tokens=14, total_tokens=74,
         session_id="conv-42", prompt="Weather in Paris?", answer='[tool call] get_weather({"city":"Paris"})',
         operation="chat", finish_reasons=["tool_call"], response_id=RESP_ID, request_id="gen",
         tool_calls=WEATHER_TOOL_CALLS),  # fmt: skip
    # Choice, YAML variant (tool_calls beside message), after a full tool round trip.
    case("semconv-1.30-logs-choice-yaml-tool_calls",
         span({**SEMCONV_128_SPAN, "gen_ai.response.finish_reasons": ["tool_calls"]}, name="chat gpt-4o"),
         WEATHER_HISTORY + [log("gen_ai.choice", {"index": 0, "finish_reason": "tool_calls",
                                                   "message": {"role": "assistant"}, "tool_calls": [WEATHER_CALL]})],
         provider="openai", model="gpt-4o-2024-08-06", prompt_tokens=60, completion_tokens=14, total_tokens=74,
         session_id="conv-42", prompt="Weather in Paris?", answer='[tool call] get_weather({"city":"Paris"})',
         operation="chat", finish_reasons=["tool_call"], response_id=RESP_ID, request_id="gen",
         tool_calls=WEATHER_TOOL_CALLS, messages={
             "input": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"},
                       {"role": "assistant", "tool_calls": WEATHER_TOOL_CALLS},
                       {"role": "tool", "content": "18C, sunny"}],
             "output": [{"role": "assistant", "tool_calls": WEATHER_TOOL_CALLS, "finish_reason": "tool_calls"}]}),
    case("semconv-1.36-logs-choice-text",
         span({**SEMCONV_128_SPAN, "gen_ai.response.finish_reasons": ["stop"]}, name="chat gpt-4o"),
         WEATHER_HISTORY + [log("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                                                   "message": {"content": "18C and sunny in Paris."}})],
         provider="openai", model="gpt-4o-2024-08-06", prompt_tokens=60, completion_tokens=14, total_tokens=74,
         session_id="conv-42", prompt="Weather in Paris?", answer="18C and sunny in Paris.", operation="chat",
         finish_reasons=["stop"], response_id=RESP_ID, request_id="gen"),  # fmt: skip
    # 1.28-1.36 message events as SPAN events: body fields as attributes, maps as JSON strings.
    case("semconv-1.28-span-events", span({**SEMCONV_128_SPAN, "gen_ai.response.finish_reasons": ["stop"]}, events=[
        event("gen_ai.system.message", **{"gen_ai.system": "openai", "content": "Be nice."}),
        event("gen_ai.user.message", **{"gen_ai.system": "openai", "content": "Hello"}),
        event("gen_ai.choice", **{"gen_ai.system": "openai", "index": 0, "finish_reason": "stop",
                                  "message": js({"role": "assistant", "content": "Hi there"})}),
    ]), provider="openai", model="gpt-4o-2024-08-06", prompt_tokens=60, completion_tokens=14, total_tokens=74,
        session_id="conv-42", prompt="Hello", answer="Hi there", operation="chat", finish_reasons=["stop"],
        response_id=RESP_ID, request_id="gen"),  # fmt: skip
    # §3.3 / §4 1.37+: provider.name, input/output messages as JSON strings, system_instructions.
    case("semconv-1.37-messages-response", span({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4.1",
        "gen_ai.response.model": "gpt-4.1-2025-04-14", "gen_ai.response.id": "chatcmpl-Bv1", "gen_ai.usage.input_tokens": 40,
        "gen_ai.usage.output_tokens": 6, "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.system_instructions": js([{"type": "text", "content": "You are a calculator."}]),
        "gen_ai.input.messages": js(CALC_INPUT), "gen_ai.output.messages": js(CALC_OUTPUT),
    }, name="chat gpt-4.1"), provider="openai", model="gpt-4.1-2025-04-14", prompt_tokens=40, completion_tokens=6,
        total_tokens=46, prompt="What is 2+2?", answer="2+2 is 4.", operation="chat", finish_reasons=["stop"],
        response_id="chatcmpl-Bv1", request_id="otel", messages={
            "input": [{"role": "system", "content": "You are a calculator."}, {"role": "user", "content": "What is 2+2?"},
                      {"role": "assistant", "tool_calls": [{"name": "calc", "arguments": '{"expr":"2+2"}'}]},
                      {"role": "tool", "content": "4"}],
            "output": [{"role": "assistant", "content": "2+2 is 4.", "finish_reason": "stop"}]}),  # fmt: skip
    # Tool result under "result" (the spec's attribute examples) instead of the schema's "response".
    case("semconv-1.41-tool_call_response-result", span({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.request.model": "anthropic.claude-3-haiku-20240307-v1:0", "gen_ai.usage.input_tokens": 20,
        "gen_ai.usage.output_tokens": 4, "gen_ai.response.finish_reasons": ["end_turn"],
        "gen_ai.input.messages": js([parts("user", "Weather?"),
                                     parts("assistant", {"type": "tool_call", "id": "t1", "name": "weather"}),
                                     parts("tool", {"type": "tool_call_response", "id": "t1", "result": {"c": 18}})]),
        "gen_ai.output.messages": js([parts("assistant", "It is 18C.", finish="end_turn")]),
    }), provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0", prompt_tokens=20, completion_tokens=4,
        total_tokens=24, prompt="Weather?", answer="It is 18C.", operation="chat", finish_reasons=["end_turn"],
        request_id="otel", messages={
            "input": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [
                {"name": "weather", "arguments": ""}]}, {"role": "tool", "content": '{"c":18}'}],
            "output": [{"role": "assistant", "content": "It is 18C.", "finish_reason": "end_turn"}]}),  # fmt: skip
    # 1.37+ gen_ai.client.inference.operation.details LOG record: structured attributes, no body.
    case("semconv-1.37-operation.details-log", span({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 9, "gen_ai.usage.output_tokens": 3, "gen_ai.response.finish_reasons": ["stop"],
    }, name="chat gpt-4o-mini"), [log("gen_ai.client.inference.operation.details", None, {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.system_instructions": ({"type": "text", "content": "Be kind."},),
        "gen_ai.input.messages": (parts("user", "Hi"),), "gen_ai.output.messages": (parts("assistant", "Hello!", finish="stop"),),
    })], provider="openai", model="gpt-4o-mini", prompt_tokens=9, completion_tokens=3, total_tokens=12, prompt="Hi",
        answer="Hello!", operation="chat", finish_reasons=["stop"], request_id="otel"),  # fmt: skip
    # §1 1.40/1.41 cache and reasoning (cache-inclusive input, as the spec says for 1.40+).
    case("semconv-1.41-cache-reasoning", span({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.cache_read.input_tokens": 800,
        "gen_ai.usage.output_tokens": 200, "gen_ai.usage.reasoning.output_tokens": 50,
    }), provider="openai", model="gpt-4o", prompt_tokens=1000, completion_tokens=200, total_tokens=1200,
        operation="chat", request_id="otel", usage={"cache_read_tokens": 800, "reasoning_tokens": 50},
        cost_usd=(200 * 2.5 + 800 * 1.25 + 200 * 10.0) / 1e6),  # fmt: skip
    # Anthropic's own input_tokens excludes the cache (anthropic.md): prompt = input + cache_read + cache_write.
    case("anthropic-input-excludes-cache", span({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 50, "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.cache_creation.input_tokens": 200, "gen_ai.usage.output_tokens": 100,
    }), provider="anthropic", model="claude-sonnet-4-5", prompt_tokens=1250, completion_tokens=100, total_tokens=1350,
        operation="chat", request_id="otel", usage={"cache_read_tokens": 1000, "cache_write_tokens": 200},
        cost_usd=(50 * 3.0 + 1000 * 0.3 + 200 * 3.75 + 100 * 15.0) / 1e6),  # fmt: skip
    case("anthropic-semconv-conformant", span({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 1250, "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.cache_write.input_tokens": 200, "gen_ai.usage.output_tokens": 100,
    }), provider="anthropic", model="claude-sonnet-4-5", prompt_tokens=1250, completion_tokens=100, total_tokens=1350,
        operation="chat", request_id="otel", usage={"cache_read_tokens": 1000, "cache_write_tokens": 200}),
    # §2.1 the other billable operations.
    case("semconv-1.33-generate_content", span({
        "gen_ai.operation.name": "generate_content", "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gemini-2.5-flash", "gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 22,
        "gen_ai.input.messages": js([parts("user", "Tell me a joke")]),
        "gen_ai.output.messages": js([parts("model", "Why did...", finish="stop")]),
    }), provider="google", model="gemini-2.5-flash", prompt_tokens=11, completion_tokens=22, total_tokens=33,
        prompt="Tell me a joke", answer="Why did...", operation="generate_content", request_id="otel"),  # fmt: skip
    case("semconv-1.29-embeddings", span({
        "gen_ai.operation.name": "embeddings", "gen_ai.system": "openai", "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": 8,
    }, name="embeddings text-embedding-3-small"), provider="openai", model="text-embedding-3-small", prompt_tokens=8,
        total_tokens=8, operation="embeddings", request_id="otel", cost_usd=8 * 0.02 / 1e6),  # fmt: skip
    # §7 OpenLLMetry legacy (<= 0.53): indexed content, llm.request.type, llm.usage.total_tokens, association props.
    case("openllmetry-legacy-chat", span({
        "llm.request.type": "chat", "gen_ai.system": "OpenAI", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.response.id": RESP_ID,
        "gen_ai.usage.prompt_tokens": 20, "gen_ai.usage.completion_tokens": 10, "llm.usage.total_tokens": 30,
        "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "Use tools.",
        "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "Weather in Paris?",
        "gen_ai.prompt.2.role": "assistant", "gen_ai.prompt.2.tool_calls.0.id": "call_1",
        "gen_ai.prompt.2.tool_calls.0.name": "get_weather", "gen_ai.prompt.2.tool_calls.0.arguments": '{"city":"Paris"}',
        "gen_ai.prompt.3.role": "tool", "gen_ai.prompt.3.content": "18C", "gen_ai.prompt.3.tool_call_id": "call_1",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "It is 18C.",
        "gen_ai.completion.0.finish_reason": "stop",
        "traceloop.association.properties.session_id": "tl-sess", "traceloop.association.properties.user_id": "tl-user",
        "traceloop.association.properties.tenant": "acme",
    }, name="openai.chat"), provider="openai", model="gpt-4o-mini-2024-07-18", prompt_tokens=20, completion_tokens=10,
        total_tokens=30, session_id="tl-sess", end_user_id="tl-user", prompt="Weather in Paris?", answer="It is 18C.",
        operation="chat", finish_reasons=["stop"], response_id=RESP_ID, request_id="gen", metadata={"tenant": "acme"},
        provider_raw="OpenAI"),  # fmt: skip
    case("openllmetry-legacy-tool-call-choice", span({
        "llm.request.type": "chat", "gen_ai.system": "OpenAI", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 2, "llm.usage.total_tokens": 12,
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Weather?",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.name": "get_weather",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"city":"Paris"}',
    }, name="openai.chat"), provider="openai", model="gpt-4o-mini", prompt_tokens=10, completion_tokens=2,
        total_tokens=12, prompt="Weather?", answer='[tool call] get_weather({"city":"Paris"})', operation="chat",
        finish_reasons=["tool_call"], request_id="otel", tool_calls=WEATHER_TOOL_CALLS),  # fmt: skip
    case("openllmetry-legacy-completion", span({
        "llm.request.type": "completion", "gen_ai.system": "OpenAI", "gen_ai.request.model": "gpt-3.5-turbo-instruct",
        "gen_ai.usage.prompt_tokens": 4, "gen_ai.usage.completion_tokens": 6, "llm.usage.total_tokens": 10,
        "gen_ai.prompt.0.content": "Say this is a test", "gen_ai.completion.0.content": "This is a test",
    }, name="openai.completion"), provider="openai", model="gpt-3.5-turbo-instruct", prompt_tokens=4,
        completion_tokens=6, total_tokens=10, prompt="Say this is a test", answer="This is a test",
        operation="text_completion", request_id="otel"),  # fmt: skip
    case("openllmetry-legacy-embedding", span({
        "llm.request.type": "embedding", "gen_ai.system": "OpenAI", "gen_ai.request.model": "text-embedding-ada-002",
        "gen_ai.usage.prompt_tokens": 7, "llm.usage.total_tokens": 7,
    }, name="openai.embeddings"), provider="openai", model="text-embedding-ada-002", prompt_tokens=7, total_tokens=7,
        operation="embeddings", request_id="otel"),  # fmt: skip
    # §6 OpenInference LLM span.
    case("openinference-llm", span({
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-2024-08-06", "llm.provider": "openai",
        "llm.system": "openai", "llm.invocation_parameters": js({"model": "gpt-4o", "temperature": 0.3}),
        "llm.token_count.prompt": 30, "llm.token_count.completion": 12, "llm.token_count.total": 42,
        "llm.token_count.prompt_details.cache_read": 10, "llm.cost.total": 0.00123,
        "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "Describe images.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.contents.0.message_content.type": "text",
        "llm.input_messages.1.message.contents.0.message_content.text": "What is in this picture?",
        "llm.input_messages.1.message.contents.1.message_content.type": "image",
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "A cat.",
        "input.value": js({"model": "gpt-4o", "messages": [{"role": "user", "content": "What is in this picture?"}]}),
        "input.mime_type": "application/json", "output.mime_type": "application/json",
        "output.value": js({"id": RESP_ID, "choices": [{"index": 0, "finish_reason": "stop",
                                                         "message": {"role": "assistant", "content": "A cat."}}]}),
        "llm.finish_reason": "stop", "session.id": "oi-sess", "user.id": "oi-user",
        "metadata": js({"tenant": "acme", "tier": "gold"}), "tag.tags": ["beta", "vision"],
    }, name="ChatCompletion", kind="INTERNAL"), provider="openai", model="gpt-4o-2024-08-06", prompt_tokens=30,
        completion_tokens=12, total_tokens=42, session_id="oi-sess", end_user_id="oi-user",
        prompt="What is in this picture?", answer="A cat.", operation="chat", finish_reasons=["stop"],
        response_id=RESP_ID, request_id="gen", cost_usd=0.00123, usage={"cache_read_tokens": 10},
        metadata={"tenant": "acme", "tier": "gold", "tags": ["beta", "vision"]}, request={"temperature": 0.3}),
    case("openinference-llm-tool-calls", span({
        "openinference.span.kind": "LLM", "llm.model_name": "mistral-large-latest", "llm.provider": "mistralai",
        "llm.token_count.prompt": 15, "llm.token_count.completion": 5,
        "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "Weather?",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city":"Paris"}',
        "output.value": "not json", "output.mime_type": "text/plain", "llm.finish_reason": "tool_calls",
    }), provider="mistral", model="mistral-large-latest", prompt_tokens=15, completion_tokens=5, total_tokens=20,
        prompt="Weather?", answer='[tool call] get_weather({"city":"Paris"})', operation="chat", request_id="otel",
        finish_reasons=["tool_call"],  # docs/mapping.md: tool_calls normalised to tool_call, whatever the dialect
        tool_calls=WEATHER_TOOL_CALLS, provider_raw="mistralai"),  # fmt: skip
    case("openinference-embedding", span({
        "openinference.span.kind": "EMBEDDING", "embedding.model_name": "text-embedding-3-large",
        "llm.provider": "openai", "llm.token_count.prompt": 6, "llm.token_count.total": 6,
    }, name="CreateEmbeddings"), provider="openai", model="text-embedding-3-large", prompt_tokens=6, total_tokens=6,
        operation="embeddings", request_id="otel", cost_usd=6 * 0.13 / 1e6),  # fmt: skip
    # §8.1 Vercel AI SDK.
    case("vercel-doGenerate-v4", span({
        "ai.operationId": "ai.generateText.doGenerate", "operation.name": "ai.generateText.doGenerate chat-fn",
        "ai.telemetry.functionId": "chat-fn", "ai.model.id": "gpt-4o-mini", "ai.model.provider": "openai.chat",
        "ai.prompt.format": "messages", "ai.prompt.messages": js([
            {"role": "system", "content": "Be brief"}, {"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]),
        "ai.response.text": "General Kenobi", "ai.response.finishReason": "stop", "ai.response.id": RESP_ID,
        "ai.response.model": "gpt-4o-mini-2024-07-18", "ai.usage.promptTokens": 15, "ai.usage.completionTokens": 6,
        "ai.telemetry.metadata.sessionId": "v-sess", "ai.telemetry.metadata.userId": "v-user",
        "ai.telemetry.metadata.plan": "pro", "gen_ai.system": "openai.chat", "gen_ai.request.model": "gpt-4o-mini",
    }, name="ai.generateText.doGenerate", scope="ai"), provider="openai", model="gpt-4o-mini-2024-07-18",
        prompt_tokens=15, completion_tokens=6, total_tokens=21, session_id="v-sess", end_user_id="v-user",
        prompt="Hello there", answer="General Kenobi", operation="chat", finish_reasons=["stop"], response_id=RESP_ID,
        request_id="gen", metadata={"plan": "pro"}, provider_raw="openai.chat", workflow_name="chat-fn"),
    case("vercel-doStream-v5-toolcalls", span({
        "ai.operationId": "ai.streamText.doStream", "ai.model.id": "gpt-4.1", "ai.model.provider": "openai.responses",
        "ai.prompt.messages": js([{"role": "user", "content": "Weather in SF?"}]), "ai.response.text": "",
        "ai.response.toolCalls": js([{"toolCallType": "function", "toolCallId": "c1", "toolName": "weather",
                                      "args": js({"city": "SF"})}]),
        "ai.response.finishReason": "tool-calls", "ai.usage.inputTokens": 40, "ai.usage.outputTokens": 12,
        "ai.response.msToFirstChunk": 123.4,
    }, name="ai.streamText.doStream", scope="ai"), provider="openai", model="gpt-4.1", prompt_tokens=40,
        completion_tokens=12, total_tokens=52, prompt="Weather in SF?", answer='[tool call] weather({"city":"SF"})',
        operation="chat", finish_reasons=["tool_call"], request_id="otel",
        tool_calls=[{"name": "weather", "arguments": '{"city":"SF"}'}], ttft_ms=123.4),  # fmt: skip
    case("vercel-v3-result-and-ai.prompt", span({
        "ai.operationId": "ai.generateText.doGenerate", "ai.model.id": "claude-3-5-haiku-20241022",
        "ai.model.provider": "anthropic.messages", "ai.prompt": js({"system": "You are a poet.", "prompt": "Write a haiku"}),
        "ai.result.text": "Old pond...", "ai.finishReason": "stop", "ai.usage.promptTokens": 14,
        "ai.usage.completionTokens": 17,
    }, name="ai.generateText.doGenerate", scope="ai"), provider="anthropic", model="claude-3-5-haiku-20241022",
        prompt_tokens=14, completion_tokens=17, total_tokens=31, prompt="Write a haiku", answer="Old pond...",
        operation="chat", finish_reasons=["stop"], request_id="otel"),  # fmt: skip
    # AI SDK embeddings report one count, ai.usage.tokens: all of it is input and must be billable.
    case("vercel-embed-doEmbed", span({
        "ai.operationId": "ai.embed.doEmbed", "ai.model.id": "text-embedding-3-small",
        "ai.model.provider": "openai.embedding", "ai.usage.tokens": 9,
    }, name="ai.embed.doEmbed", scope="ai"), provider="openai", model="text-embedding-3-small", prompt_tokens=9,
        total_tokens=9, operation="embeddings", request_id="otel", cost_usd=9 * 0.02 / 1e6),  # fmt: skip
    # §8.2 Pydantic AI chat span (semconv) and Logfire instrument_openai (request_data/response_data).
    case("pydantic-ai-chat", span({
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 10,
        "logfire.msg": "chat gpt-4o", "logfire.span_type": "span", "model_request_parameters": js({"tools": []}),
        "gen_ai.input.messages": js([parts("user", "Where is Paris?")]),
        "gen_ai.output.messages": js([parts("assistant", "In France.", finish="stop")]),
    }, name="chat gpt-4o", scope="pydantic-ai"), provider="openai", model="gpt-4o-2024-08-06", prompt_tokens=50,
        completion_tokens=10, total_tokens=60, prompt="Where is Paris?", answer="In France.", operation="chat",
        request_id="otel"),  # fmt: skip
    case("logfire-instrument_openai", span({
        "request_data": js({"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be kind"},
                                                                 {"role": "user", "content": "Hi"}]}),
        "response_data": js({"message": {"role": "assistant", "content": "Hello!"},
                             "usage": {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}}),
        "async": False, "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "logfire.msg_template": "Chat Completion with {request_data[model]!r}",
    }, name="Chat Completion with 'gpt-4o-mini'", scope="logfire.openai"), provider="openai", model="gpt-4o-mini",
        prompt_tokens=8, completion_tokens=3, total_tokens=11, prompt="Hi", answer="Hello!", operation="chat",
        request_id="otel"),  # fmt: skip
    # promptwall.* attributes win over every dialect's equivalents.
    case("promptwall-attributes", span({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.conversation.id": "conv-1", "user.id": "oi-user", "promptwall.session_id": "pw-sess",
        "promptwall.user_id": "pw-user", "promptwall.use_case": "support-bot", "promptwall.team_id": "team-a",
        "promptwall.metadata.tier": "gold", "promptwall.metadata.region": "us", "promptwall.integration_id": "my-int",
    }, resource={"service.name": "svc", "promptwall.metadata.region": "eu", "promptwall.metadata.cluster": "c1",
                 "promptwall.use_case": "ignored", "promptwall.team_id": "ignored"}),
        provider="openai", model="gpt-4o-mini", session_id="pw-sess", end_user_id="pw-user", operation="chat",
        request_id="otel", use_case="support-bot", team_id="team-a", integration_id="my-int",
        metadata={"tier": "gold", "region": "us", "cluster": "c1"}),  # fmt: skip
    case("promptwall-resource-defaults", span({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
    }, resource={"service.name": "checkout", "service.version": "2.3.1", "promptwall.use_case": "checkout-help",
                 "promptwall.team_id": "payments", "promptwall.session_id": "res-sess", "promptwall.user_id": "res-user"}),
        provider="openai", model="gpt-4o-mini", session_id="res-sess", end_user_id="res-user", operation="chat",
        request_id="otel", use_case="checkout-help", team_id="payments", integration_id="otel:checkout@2.3.1"),
]  # fmt: skip

OPTIONAL_CHECKS = ("usage", "tool_calls", "messages", "request", "error", "provider_raw", "workflow_name", "ttft_ms")


@pytest.mark.parametrize("view, logs, expected", CASES)
def test_dialect(view: SpanView, logs: Sequence[LogView], expected: Dict[str, Any]) -> None:
    assert classify(view).span_class is SpanClass.INFERENCE
    record = build_event(view, logs)
    assert record is not None
    assert_sane(record)
    meta = gen_ai(record)
    got = {f: record.get(f) for f in RECORD_FIELDS} | {f: meta.get(f) for f in GEN_AI_FIELDS}
    want = {f: expected.get(f) for f in RECORD_FIELDS + GEN_AI_FIELDS}
    want["status"] = expected.get("status", "ok")
    assert got == want
    assert record["user_id"] == record.get("end_user_id") if "end_user_id" in record else "user_id" not in record
    if expected["request_id"] == "gen":
        assert GEN_ID.match(record["request_id"]), record["request_id"]
    else:
        assert record["request_id"] == OTEL_ID
    for key in OPTIONAL_CHECKS:
        if key in expected:
            assert meta.get(key) == expected[key], key
    for key in ("use_case", "team_id", "integration_id"):
        if key in expected:
            assert record.get(key) == expected[key], key
    if "cost_usd" in expected:
        assert record.get("cost_usd") == pytest.approx(expected["cost_usd"], abs=1e-12)
    for key, value in expected.get("metadata", {}).items():
        assert record["metadata"].get(key) == value, key
    assert meta["content_captured"] is bool(expected.get("prompt") or expected.get("answer"))


# --- classification of non-billable operations ---------------------------------------------------

NOT_BILLED = [
    pytest.param({"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai", "gen_ai.agent.name": "planner",
                  "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 90},
                 SpanClass.AGGREGATE, "invoke_agent", id="semconv-invoke_agent"),
    pytest.param({"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "triage"},
                 SpanClass.AGGREGATE, "invoke_workflow", id="semconv-invoke_workflow"),
    pytest.param({"gen_ai.operation.name": "create_agent", "gen_ai.provider.name": "openai", "gen_ai.agent.name": "a",
                  "gen_ai.request.model": "gpt-4o"}, SpanClass.CONTEXT, "create_agent", id="semconv-create_agent"),
    pytest.param({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
                  "gen_ai.tool.call.id": "call_1"}, SpanClass.CONTEXT, "execute_tool", id="semconv-execute_tool"),
    pytest.param({"gen_ai.operation.name": "retrieval", "gen_ai.provider.name": "openai",
                  "gen_ai.data_source.id": "kb-1"}, SpanClass.CONTEXT, "retrieval", id="semconv-retrieval"),
    pytest.param({"llm.request.type": "rerank", "gen_ai.system": "Cohere", "gen_ai.request.model": "rerank-v3.5"},
                 SpanClass.CONTEXT, "rerank", id="openllmetry-rerank"),
    pytest.param({"traceloop.span.kind": "workflow", "traceloop.workflow.name": "w"}, SpanClass.AGGREGATE, "workflow",
                 id="traceloop-workflow"),
    pytest.param({"traceloop.span.kind": "agent", "traceloop.entity.name": "a"}, SpanClass.AGGREGATE, "agent",
                 id="traceloop-agent"),
    pytest.param({"traceloop.span.kind": "task", "traceloop.entity.name": "t"}, SpanClass.CONTEXT, "task", id="traceloop-task"),
    pytest.param({"traceloop.span.kind": "tool", "traceloop.entity.name": "t"}, SpanClass.CONTEXT, "tool", id="traceloop-tool"),
    pytest.param({"openinference.span.kind": "AGENT", "llm.token_count.prompt": 100}, SpanClass.AGGREGATE, "agent", id="oi-AGENT"),
    pytest.param({"openinference.span.kind": "CHAIN", "input.value": "q"}, SpanClass.AGGREGATE, "chain", id="oi-CHAIN"),
    pytest.param({"openinference.span.kind": "TOOL", "tool.name": "calc"}, SpanClass.CONTEXT, "tool", id="oi-TOOL"),
    pytest.param({"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.id": "d1"},
                 SpanClass.CONTEXT, "retriever", id="oi-RETRIEVER"),
    pytest.param({"ai.operationId": "ai.generateText", "ai.model.id": "gpt-4o", "ai.model.provider": "openai.chat",
                  "ai.usage.promptTokens": 30, "ai.usage.completionTokens": 9}, SpanClass.AGGREGATE, "ai.generateText",
                 id="vercel-generateText"),
    pytest.param({"ai.operationId": "ai.toolCall", "ai.toolCall.name": "weather", "ai.toolCall.id": "c1"},
                 SpanClass.CONTEXT, "ai.toolCall", id="vercel-toolCall"),
    pytest.param({"agent_name": "support", "gen_ai.agent.name": "support", "model_name": "gpt-4o",
                  "logfire.msg": "support run", "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 80,
                  "pydantic_ai.all_messages": js([parts("user", "Hi"), parts("assistant", "Hello")])},
                 SpanClass.AGGREGATE, "invoke_agent", id="pydantic-ai-agent-run"),
]  # fmt: skip


@pytest.mark.parametrize("attrs, span_class, operation", NOT_BILLED)
def test_not_billed_on_its_own(attrs: Dict[str, Any], span_class: SpanClass, operation: str) -> None:
    view = span(attrs, name="agent")
    found = classify(view)
    assert (found.span_class, found.operation) == (span_class, operation)
    assert build_event(view) is None


@pytest.mark.parametrize("attrs, span_class, operation", [p for p in NOT_BILLED if p.values[1] is SpanClass.AGGREGATE])
def test_aggregate_maps_only_when_classified_explicitly(attrs: Dict[str, Any], span_class: SpanClass, operation: str) -> None:
    view = span(attrs, name="agent")
    record = build_event(view, classification=classify(view))
    assert record is not None
    assert_sane(record)
    assert record["request_id"] == OTEL_ID
    assert gen_ai(record)["usage_source"] == "aggregate"
    assert gen_ai(record)["content_captured"] is False and "prompt" not in record and "answer" not in record


def test_aggregate_usage_of_agent_runs() -> None:
    pydantic = next(p for p in NOT_BILLED if p.id == "pydantic-ai-agent-run").values[0]
    view = span(pydantic, name="agent run")
    record = build_event(view, classification=Classification(SpanClass.AGGREGATE, "invoke_agent", "logfire"))
    assert_sane(record)
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (300, 80, 380)
    assert gen_ai(record)["agent_name"] == "support"


# --- provider normalisation -------------------------------------------------------------------------

PROVIDERS = [
    ("gen_ai.system", "az.ai.openai", "azure"), ("gen_ai.system", "az.ai.inference", "azure"),
    ("gen_ai.provider.name", "azure.ai.inference", "azure"), ("gen_ai.provider.name", "azure.ai.openai", "azure"),
    ("gen_ai.provider.name", "gcp.vertex_ai", "google"), ("gen_ai.provider.name", "gcp.gemini", "google"),
    ("gen_ai.provider.name", "gcp.gen_ai", "google"), ("gen_ai.system", "vertex_ai", "google"),
    ("gen_ai.system", "gemini", "google"), ("gen_ai.provider.name", "aws.bedrock", "bedrock"),
    ("gen_ai.provider.name", "mistral_ai", "mistral"), ("gen_ai.provider.name", "x_ai", "xai"),
    ("gen_ai.system", "xai", "xai"), ("gen_ai.provider.name", "ibm.watsonx.ai", "ibm"),
    ("gen_ai.provider.name", "openai", "openai"), ("gen_ai.provider.name", "anthropic", "anthropic"),
    ("gen_ai.provider.name", "groq", "groq"), ("gen_ai.provider.name", "deepseek", "deepseek"),
    ("gen_ai.system", "OpenAI", "openai"), ("gen_ai.provider.name", "Acme_AI", "acme_ai"),
    ("gen_ai.provider.name", "ollama", "ollama"), ("llm.provider", "aws", "bedrock"), ("llm.provider", "xai", "xai"),
    ("gen_ai.provider.name", "Acme.Cloud", "acme.cloud"),  # mapping.md: only ai.model.provider is cut at the first "."
]  # fmt: skip


@pytest.mark.parametrize("key, raw, expected", PROVIDERS, ids=[f"{k}={r}" for k, r, _ in PROVIDERS])
def test_provider_normalisation(key: str, raw: str, expected: str) -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", key: raw}
    if key.startswith("llm."):
        attrs = {"openinference.span.kind": "LLM", "llm.model_name": "m", key: raw}
    record = build_event(span(attrs))
    assert_sane(record)
    assert record["provider"] == expected
    assert gen_ai(record).get("provider_raw") == (raw if raw != expected else None)


# --- request_id, integration_id, cost, options ------------------------------------------------------

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 500}  # fmt: skip


def test_response_id_keys_one_call_across_traces() -> None:
    a = build_event(span({**CHAT, "gen_ai.response.id": RESP_ID}))
    b = build_event(span({**CHAT, "gen_ai.response.id": RESP_ID}, trace_id=TRACE + 1, span_id=SPAN + 1, start=START + 10))
    assert_sane(a)
    assert_sane(b)
    assert GEN_ID.match(a["request_id"]) and a["request_id"] == b["request_id"]
    other = build_event(span({**CHAT, "gen_ai.response.id": RESP_ID}), options=MappingOptions(dedupe_by_response_id=False))
    assert other["request_id"] == OTEL_ID
    short = build_event(span({**CHAT, "gen_ai.response.id": "r" * 15}))
    assert short["request_id"] == OTEL_ID


@pytest.mark.parametrize("resource, expected", [
    ({"service.name": "checkout", "service.version": "2.3.1"}, "otel:checkout@2.3.1"),
    ({"service.name": "checkout"}, "otel:checkout"),
    ({}, "otel:unknown_service"),
    ({"service.name": "checkout", "promptwall.integration_id": "from-resource"}, "from-resource"),
])  # fmt: skip
def test_default_integration_id(resource: Dict[str, Any], expected: str) -> None:
    record = build_event(span(CHAT, resource=resource))
    assert_sane(record)
    assert record["integration_id"] == expected


@pytest.mark.parametrize("attrs, cost, source", [
    pytest.param(CHAT, (1000 * 0.15 + 500 * 0.6) / 1e6, "price_table", id="gpt-4o-mini"),
    pytest.param({**CHAT, "gen_ai.response.model": "gpt-4o-mini-2024-07-18"}, (1000 * 0.15 + 500 * 0.6) / 1e6,
                 "price_table", id="dated-response-model"),
    pytest.param({**CHAT, "gen_ai.usage.cache_read.input_tokens": 600}, (400 * 0.15 + 600 * 0.075 + 500 * 0.6) / 1e6,
                 "price_table", id="cached-input"),
    pytest.param({**CHAT, "gen_ai.request.model": "my-finetune-xyz"}, None, None, id="unknown-model"),
    pytest.param({**CHAT, "gen_ai.usage.cost": 0.42}, 0.42, "span", id="span-cost-wins"),
    pytest.param({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.token_count.prompt": 10,
                  "llm.cost.total": 0.5}, 0.5, "span", id="openinference-cost-wins"),
])  # fmt: skip
def test_cost(attrs: Dict[str, Any], cost: Optional[float], source: Optional[str]) -> None:
    record = build_event(span(attrs))
    assert_sane(record)
    if cost is None:
        assert "cost_usd" not in record and "cost_source" not in gen_ai(record)
    else:
        assert record["cost_usd"] == pytest.approx(cost, abs=1e-12)
        assert gen_ai(record)["cost_source"].startswith(source)


@pytest.mark.parametrize("view, logs, expected", [c for c in CASES if c.values[2].get("prompt")])
def test_capture_content_off(view: SpanView, logs: Sequence[LogView], expected: Dict[str, Any]) -> None:
    record = build_event(view, logs, options=MappingOptions(capture_content=False))
    assert_sane(record)
    assert "prompt" not in record and "answer" not in record
    meta = gen_ai(record)
    assert meta["content_captured"] is False
    assert "messages" not in meta and "tool_calls" not in meta
    for field in ("prompt_tokens", "completion_tokens", "total_tokens", "model", "provider"):
        assert record.get(field) == expected.get(field), field


def test_vendor_mode() -> None:
    record = build_event(span(CHAT), options=MappingOptions(mode="vendor"))
    assert_sane(record)
    assert record["mode"] == "vendor"
    assert build_event(span(CHAT))["mode"] == "sdk"
