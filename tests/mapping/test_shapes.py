"""Payload shapes that cut across dialects: OpenAI Responses-API objects and tool results.

Built from what producers emit: a recorded run of the OpenAI Agents SDK under
OpenInference (tests/fixtures/captures, see capture_agents.py), Responses
objects serialised by the openai package's own types (as OpenInference's
ResponseSpanData handler does with ``model_dump_json``), and the message
shapes Pydantic AI (tool returns in a ``user`` message), Anthropic and the AI
SDK write for tool results.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
from openai.types.responses import Response

from promptwall_otel.mapping import MappingOptions, build_event
from promptwall_otel.mapping.ledger import TraceLedger
from promptwall_otel.record import validate_event
from tests.mapping.captures import load
from tests.mapping.test_dialects import GEN_ID, js, parts, span

RESPONSE_ID = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Needs the weather tool."}]}
MESSAGE = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]}  # fmt: skip
CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
        "arguments": '{"city":"Paris"}', "status": "completed"}  # fmt: skip
TOOL_ANSWER = '[tool call] get_weather({"city":"Paris"})'


def response_json(*output: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    """A Responses-API object exactly as the openai package serialises it."""
    usage = {"input_tokens": 36, "output_tokens": 87, "total_tokens": 123,
             "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens_details": {"reasoning_tokens": 64}}  # fmt: skip
    raw = {"id": RESPONSE_ID, "object": "response", "created_at": 1741476542, "model": "o4-mini-2025-04-16",
           "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "status": "completed",
           "output": list(output), "usage": usage, **extra}  # fmt: skip
    return json.loads(Response.model_validate(raw).model_dump_json())


def llm_span(input_value: Any, output_value: Any) -> Any:
    return span({"openinference.span.kind": "LLM", "llm.system": "openai", "llm.model_name": "o4-mini-2025-04-16",
                 "input.value": input_value if isinstance(input_value, str) else js(input_value),
                 "input.mime_type": "application/json", "output.value": js(output_value),
                 "output.mime_type": "application/json"}, name="response")  # fmt: skip


def gen_ai(record: Dict[str, Any]) -> Dict[str, Any]:
    return record["metadata"]["gen_ai"]


# --- item 4: answers in the Responses-API shape ------------------------------------------------


def test_agents_sdk_streamed_generations_have_answers() -> None:
    """The Agents SDK's streamed generations: output.value is [Responses object], no output messages."""
    views, _ = load("openai-agents__openinference__agent_stream_tool")
    records = TraceLedger().map_batch(views, MappingOptions())
    assert [r["metadata"]["otel"]["span_name"] for r in records] == ["generation", "generation"]  # agents, tools: no
    first, second = records
    assert (first["prompt"], first["answer"]) == ("What is the weather in Paris?", TOOL_ANSWER)
    assert gen_ai(first)["tool_calls"] == [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]
    assert (second["prompt"], second["answer"]) == ("What is the weather in Paris?", "Tool said: Sunny, 22C in Paris")
    assert gen_ai(second)["messages"]["input"][-1] == {"role": "tool", "content": "Sunny, 22C in Paris"}
    for record in records:
        assert validate_event(record) == []
        # The SDK's placeholder id ("__fake_id__") never keys a call; the completion's id in each output
        # item's provider_data does (issue 11, item 3: tests/mapping/test_framework_twins.py).
        assert GEN_ID.match(record["request_id"]) and gen_ai(record)["response_id"].startswith("chatcmpl-")


@pytest.mark.parametrize("wrap", [lambda r: r, lambda r: [r]], ids=["alone", "in-a-list"])
def test_responses_object_message_calls_and_reasoning(wrap: Any) -> None:
    record = build_event(llm_span("What is the weather in Paris?", wrap(response_json(REASONING, MESSAGE, CALL))))
    assert record is not None and validate_event(record) == []
    assert record["answer"] == "Let me check.", "reasoning is never the answer"
    assert record["prompt"] == "What is the weather in Paris?"
    assert gen_ai(record)["tool_calls"] == [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]
    assert gen_ai(record)["messages"]["output"] == [{
        "role": "assistant", "content": "Let me check.", "reasoning": "Needs the weather tool.",
        "tool_calls": [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]}]  # fmt: skip
    assert gen_ai(record)["response_id"] == RESPONSE_ID and GEN_ID.match(record["request_id"])


@pytest.mark.parametrize("output, answer, finish", [
    ([REASONING, CALL], TOOL_ANSWER, None),
    ([REASONING], None, None),  # the model only reasoned (cut short): no answer, the summary stays in messages
    ([{**MESSAGE, "content": [{"type": "refusal", "refusal": "I can't help with that."}]}], "I can't help with that.", None),
    ([MESSAGE], "Let me check.", "max_output_tokens"),
])  # fmt: skip
def test_responses_output_shapes(output: List[Dict[str, Any]], answer: Any, finish: Any) -> None:
    extra = {"status": "incomplete", "incomplete_details": {"reason": finish}} if finish else {}
    record = build_event(llm_span("Weather in Paris?", [response_json(*output, **extra)]))
    assert record is not None
    assert record.get("answer") == answer
    (message,) = gen_ai(record)["messages"]["output"]
    assert message.get("finish_reason") == finish
    if output[0] is REASONING:
        assert message["reasoning"] == "Needs the weather tool."


def test_responses_output_items_without_their_response() -> None:
    """Some producers dump ``response.output`` (the item list) rather than the response."""
    record = build_event(llm_span("Weather in Paris?", [REASONING, CALL]))
    assert record is not None and record["answer"] == TOOL_ANSWER


def test_responses_input_items() -> None:
    """A Responses request's input: easy messages, typed messages, function calls and their outputs."""
    request = {"model": "o4-mini", "instructions": "Be brief.", "input": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And in Rome?"}]},
        CALL,
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 22C"},
    ]}  # fmt: skip
    record = build_event(llm_span(request, response_json(MESSAGE)))
    assert record is not None
    assert record["prompt"] == "And in Rome?", "the function's output is not the prompt"
    assert gen_ai(record)["messages"]["input"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "user", "content": "And in Rome?"},
        {"role": "assistant", "tool_calls": [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]},
        {"role": "tool", "content": "Sunny, 22C"},
    ]


# --- item 5: a tool result is never the user's prompt -------------------------------------------


def semconv_span(*inputs: Dict[str, Any]) -> Any:
    return span({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                 "gen_ai.input.messages": js(list(inputs)),
                 "gen_ai.output.messages": js([parts("assistant", "It is sunny.", finish="stop")])})  # fmt: skip


TOOL_CALL_PART = {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}


def test_tool_return_in_a_user_message_is_not_the_prompt() -> None:
    """Pydantic AI sends a tool's return as a ``user`` message whose only part is tool_call_response."""
    record = build_event(semconv_span(
        parts("user", "What is the weather in Paris?"),
        {"role": "assistant", "parts": [TOOL_CALL_PART]},
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "call_1", "name": "get_weather",
                                    "result": {"temp_c": 22, "sky": "sunny"}}]},
    ))  # fmt: skip
    assert record is not None
    assert record["prompt"] == "What is the weather in Paris?"
    assert gen_ai(record)["messages"]["input"][-1] == {"role": "user", "tool_results": ['{"temp_c":22,"sky":"sunny"}']}


def test_user_text_beside_a_tool_return_is_the_prompt() -> None:
    record = build_event(semconv_span(
        {"role": "assistant", "parts": [TOOL_CALL_PART]},
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "call_1", "result": "Sunny"},
                                   {"type": "text", "content": "Thanks, and tomorrow?"}]},
    ))  # fmt: skip
    assert record is not None and record["prompt"] == "Thanks, and tomorrow?"


def test_only_tool_results_means_no_prompt() -> None:
    """A follow-up call that sends only the tool's output (``previous_response_id`` style) has no user prompt."""
    record = build_event(semconv_span(
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "Sunny"}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_2", "response": "22C"}]},
    ))  # fmt: skip
    assert record is not None
    assert "prompt" not in record and record["answer"] == "It is sunny."
    assert gen_ai(record)["messages"]["input"] == [{"role": "user", "tool_results": ["Sunny"]},
                                                   {"role": "tool", "content": "22C"}]  # fmt: skip


@pytest.mark.parametrize("messages", [
    # Anthropic's message format (what OpenInference and OpenLLMetry record for its client)
    [{"role": "user", "content": "What is the weather in Paris?"},
     {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}]}],
    # The AI SDK's ai.prompt.messages
    [{"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]},
     {"role": "assistant", "content": [{"type": "tool-call", "toolCallId": "c1", "toolName": "get_weather", "input": {"city": "Paris"}}]},
     {"role": "tool", "content": [{"type": "tool-result", "toolCallId": "c1", "toolName": "get_weather", "output": {"type": "text", "value": "Sunny"}}]}],
])  # fmt: skip
def test_tool_results_in_chat_formats(messages: List[Dict[str, Any]]) -> None:
    record = build_event(llm_span(messages, {"role": "assistant", "content": "It is sunny."}))
    assert record is not None and record["prompt"] == "What is the weather in Paris?"
    last = gen_ai(record)["messages"]["input"][-1]
    assert "Sunny" in (last.get("content") or last["tool_results"][0])


def test_tool_results_and_reasoning_are_capped_like_content() -> None:
    options = MappingOptions(max_content_bytes=64, max_messages_bytes=16384)
    long = "x" * 1000
    record = build_event(semconv_span(
        parts("user", "Hi"),
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "c", "response": long}]},
    ), options=options)  # fmt: skip
    assert record is not None
    (result,) = record["metadata"]["gen_ai"]["messages"]["input"][-1]["tool_results"]
    assert result.startswith("x" * 10) and len(result.encode()) < 200
    reasoning = build_event(llm_span("Hi", response_json({**REASONING, "summary": [{"type": "summary_text", "text": long}]})),
                            options=options)  # fmt: skip
    assert reasoning is not None
    assert len(reasoning["metadata"]["gen_ai"]["messages"]["output"][0]["reasoning"].encode()) < 200
