"""Bad input gives a sane record (valid, UTF-8-encodable) or None, never an exception."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

import pytest

from promptwall_otel.mapping import (
    LogView, MappingOptions, SpanClass, build_event, classify, is_genai,
)  # fmt: skip
from promptwall_otel.mapping.values import TRUNCATION_MARKER
from tests.mapping.test_dialects import SPAN, TRACE, assert_sane, event, gen_ai, js, log, parts, span

BASE = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}  # fmt: skip


def build(attrs: Dict[str, Any], logs=(), options: MappingOptions = MappingOptions(), **span_args: Any) -> Dict[str, Any]:
    record = build_event(span(attrs, **span_args), logs, options=options)
    assert record is not None
    assert_sane(record)
    return record


def with_messages(user: Any, answer: Any = "ok", **more: Any) -> Dict[str, Any]:
    return {**BASE, "gen_ai.input.messages": js([parts("user", user)]),
            "gen_ai.output.messages": js([parts("assistant", answer, finish="stop")]), **more}  # fmt: skip


# --- wrong types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, field, expected", [
    pytest.param({"gen_ai.usage.input_tokens": "12"}, "prompt_tokens", 12, id="tokens-numeric-string"),
    pytest.param({"gen_ai.usage.input_tokens": " 12 "}, "prompt_tokens", 12, id="tokens-padded-string"),
    pytest.param({"gen_ai.usage.input_tokens": 12.0}, "prompt_tokens", 12, id="tokens-integral-float"),
    pytest.param({"gen_ai.usage.input_tokens": 12.7}, "prompt_tokens", 13, id="tokens-fractional-float"),
    pytest.param({"gen_ai.usage.output_tokens": b"7"}, "completion_tokens", 7, id="tokens-bytes"),
    pytest.param({"gen_ai.usage.input_tokens": -5}, "prompt_tokens", None, id="tokens-negative"),
    pytest.param({"gen_ai.usage.input_tokens": True}, "prompt_tokens", None, id="tokens-bool"),
    pytest.param({"gen_ai.usage.input_tokens": [12]}, "prompt_tokens", None, id="tokens-list"),
    pytest.param({"gen_ai.usage.input_tokens": "twelve"}, "prompt_tokens", None, id="tokens-word"),
    pytest.param({"gen_ai.usage.input_tokens": float("nan")}, "prompt_tokens", None, id="tokens-nan"),
    pytest.param({"gen_ai.usage.input_tokens": float("inf")}, "prompt_tokens", None, id="tokens-inf"),
    pytest.param({"gen_ai.usage.input_tokens": -5, "gen_ai.usage.output_tokens": -1}, "total_tokens", None,
                 id="tokens-all-negative"),
    pytest.param({"gen_ai.usage.cache_read.input_tokens": "lots"}, "prompt_tokens", 10, id="cache-garbage"),
    pytest.param({"gen_ai.request.model": 4}, "model", "4", id="model-int"),
    pytest.param({"gen_ai.request.model": b"gpt-4o\xff"}, "model", "gpt-4o\ufffd", id="model-bad-bytes"),
    pytest.param({"gen_ai.request.model": "  "}, "model", None, id="model-blank"),
    pytest.param({"gen_ai.provider.name": ["OpenAI"]}, "provider", "openai", id="provider-list"),
    pytest.param({"gen_ai.provider.name": 42}, "provider", "42", id="provider-int"),
    pytest.param({"gen_ai.conversation.id": 12345}, "session_id", "12345", id="session-int"),
    pytest.param({"gen_ai.conversation.id": "s" * 1000}, "session_id", "s" * 256, id="session-too-long"),
    pytest.param({"error.type": ["timeout", "retry"]}, "status", "error", id="error-type-list"),
    pytest.param({"gen_ai.response.finish_reasons": {"a": 1}}, "status", "ok", id="finish-reasons-map"),
    pytest.param({"gen_ai.response.time_to_first_chunk": "soon"}, "status", "ok", id="ttft-string"),
    pytest.param({"promptwall.risk_score": 7}, "risk_score", 1.0, id="risk-clamped"),
    pytest.param({"promptwall.status": "exploded"}, "status", "ok", id="status-unknown"),
])  # fmt: skip
def test_wrong_types(overrides: Dict[str, Any], field: str, expected: Any) -> None:
    record = build({**BASE, **overrides})
    assert record.get(field) == expected


def test_fractional_and_dropped_counts_are_reported() -> None:
    warnings = gen_ai(build({**BASE, "gen_ai.usage.input_tokens": 12.7, "gen_ai.usage.output_tokens": -3}))
    assert any("prompt_tokens" in w for w in warnings["mapping_warnings"])
    assert any("completion_tokens" in w for w in warnings["mapping_warnings"])


@pytest.mark.parametrize("value", [["openai", "azure"], [], [None], (1, 2), b"\xff\xfe"], ids=repr)
def test_provider_of_any_shape(value: Any) -> None:
    record = build({**BASE, "gen_ai.provider.name": value})
    assert record.get("provider") is None or isinstance(record["provider"], str)


def test_missing_model_still_maps_without_cost() -> None:
    attrs = {k: v for k, v in BASE.items() if k != "gen_ai.request.model"}
    record = build(attrs)
    assert "model" not in record and "cost_usd" not in record
    assert (record["prompt_tokens"], record["completion_tokens"]) == (10, 5)


def test_odd_timestamps() -> None:
    assert build(BASE, start=2_000_000_000, end=1_000_000_000)["latency_ms"] == 0
    build(BASE, start=0, end=0)
    build(BASE, end=2**63 - 1)


# --- enormous content ---------------------------------------------------------------------------------


def split(value: str) -> str:
    """The kept head of a truncated value (the part before the marker)."""
    return value[: value.index(TRUNCATION_MARKER.split("{")[0])]


def test_one_megabyte_prompt_is_truncated() -> None:
    huge = "x" * 1_000_000
    record = build(with_messages(huge, "short answer"))
    assert record["prompt"] == "x" * MappingOptions().max_content_bytes + TRUNCATION_MARKER.format(total=1_000_000)
    assert record["answer"] == "short answer"
    meta = gen_ai(record)
    assert "prompt" in meta["content_truncated"] and "messages" in meta["content_truncated"]
    assert "messages" not in meta
    assert len(json.dumps(record, ensure_ascii=False).encode("utf-8")) < 64 * 1024


@pytest.mark.parametrize("char", ["é", "€", "😀", "\u0301"], ids=["2-byte", "3-byte", "4-byte-emoji", "combining"])
@pytest.mark.parametrize("offset", [1, 2, 3])
def test_truncation_never_splits_a_character(char: str, offset: int) -> None:
    limit = 10
    value = "a" * (limit - offset) + char * 5 + "tail"
    record = build(with_messages(value, value), options=MappingOptions(max_content_bytes=limit))
    for field in ("prompt", "answer"):
        text = record[field]
        head = split(text)
        assert text.endswith(TRUNCATION_MARKER.format(total=len(value.encode("utf-8"))))
        assert len(head.encode("utf-8")) <= limit
        assert value.startswith(head) and len(head.encode("utf-8")) > limit - len(char.encode("utf-8"))
        text.encode("utf-8")
    assert set(gen_ai(record)["content_truncated"]) >= {"prompt", "answer"}


def test_multibyte_megabyte_prompt() -> None:
    record = build(with_messages("€" * 400_000))
    head = split(record["prompt"])
    assert head == "€" * (MappingOptions().max_content_bytes // 3)


def test_content_at_the_limit_is_untouched() -> None:
    record = build(with_messages("a" * 8 + "é"), options=MappingOptions(max_content_bytes=10))
    assert record["prompt"] == "a" * 8 + "é"
    assert "content_truncated" not in gen_ai(record)


def test_messages_over_max_messages_bytes_are_dropped() -> None:
    record = build(with_messages("q" * 300, "a" * 300), options=MappingOptions(max_messages_bytes=200))
    meta = gen_ai(record)
    assert "messages" not in meta and meta["content_truncated"] == ["messages"]
    assert (record["prompt"], record["answer"]) == ("q" * 300, "a" * 300)
    assert meta["content_captured"] is True


# --- bad bytes and lone surrogates -------------------------------------------------------------------------


def test_non_utf8_bytes_values() -> None:
    record = build({
        **BASE, "gen_ai.input.messages": b'[{"role":"user","parts":[{"type":"text","content":"caf\xe9"}]}]',
        "gen_ai.output.messages": b"\xff\xfe not json", "gen_ai.conversation.id": b"sess-\xff",
        "promptwall.metadata.note": b"\xc3", "tag.tags": [b"\xff"], "gen_ai.response.id": b"\xff" * 20,
    }, resource={"service.name": b"svc\xff"})  # fmt: skip
    assert record["prompt"] == "caf\ufffd"
    assert record["answer"] == "\ufffd\ufffd not json"
    assert record["session_id"] == "sess-\ufffd"
    assert record["metadata"]["note"] == "\ufffd"


def test_non_utf8_log_body() -> None:
    logs = [log("gen_ai.user.message", b'{"content": "\xff hi"}'), log("gen_ai.choice", b"\xfe\xff")]
    record = build(BASE, logs)
    assert record["prompt"] == "\ufffd hi"


S = "\ud800"  # a lone surrogate: what a bad decode or surrogateescape leaves in a str


@pytest.mark.parametrize("attrs, span_args", [
    pytest.param({"gen_ai.request.model": f"gpt{S}"}, {}, id="model"),
    pytest.param({"gen_ai.conversation.id": f"c{S}", "user.id": f"u{S}"}, {}, id="session-user"),
    pytest.param({"error.type": f"e{S}"}, {"status": "ERROR", "message": f"boom{S}"}, id="error"),
    pytest.param({"gen_ai.agent.name": f"agent{S}", "gen_ai.response.id": S * 20}, {}, id="agent-response-id"),
    pytest.param({"promptwall.metadata.note": f"n{S}", "tag.tags": [f"t{S}"]}, {}, id="metadata-value"),
    pytest.param({}, {"resource": {"service.name": f"svc{S}", "deployment.environment": S}}, id="resource"),
    pytest.param({"gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"a \\ud83d b"}]}]'}, {},
                 id="json-escaped-surrogate-in-content"),
    pytest.param({}, {"name": f"chat {S}"}, id="span-name"),
    pytest.param({}, {"scope": f"scope{S}"}, id="scope-name"),
    pytest.param({f"promptwall.metadata.k{S}": "v"}, {}, id="promptwall-metadata-key"),
    pytest.param({f"traceloop.association.properties.caf{S}": "x"}, {}, id="association-property-key"),
    pytest.param({"gen_ai.output.messages": js([parts("assistant", {"type": "tool_call", "name": f"f{S}",
                                                                    "arguments": {"x": f"y{S}"}})])}, {},
                 id="tool-call-arguments"),
])  # fmt: skip
def test_lone_surrogates(attrs: Dict[str, Any], span_args: Dict[str, Any]) -> None:
    record = build({**BASE, **attrs}, **span_args)
    assert "\ud800" not in json.dumps(record, ensure_ascii=False)


def test_json_escaped_surrogate_is_replaced() -> None:
    attrs = {**BASE, "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"a \\ud83d b"}]}]'}
    assert build(attrs)["prompt"] == "a \ufffd b"


def test_surrogate_in_openinference_metadata_json() -> None:
    build({"openinference.span.kind": "LLM", "llm.model_name": "m", "metadata": '{"a": {"\\udcff": "\\udcff"}}'})


# --- content that does not parse ----------------------------------------------------------------------------


@pytest.mark.parametrize("attrs, logs, events, prompt, answer", [
    pytest.param({"gen_ai.input.messages": '[{"role": "user", "parts": [', "gen_ai.output.messages": "{broken"},
                 (), (), '[{"role": "user", "parts": [', "{broken", id="semconv-1.37"),
    pytest.param({}, (), [event("gen_ai.content.prompt", **{"gen_ai.prompt": "plain words"}),
                          event("gen_ai.content.completion", **{"gen_ai.completion": "[not json"})],
                 "plain words", "[not json", id="semconv-1.26-events"),
    pytest.param({}, [log("gen_ai.user.message", "just text"), log("gen_ai.choice", "{no")], (), "just text", "{no",
                 id="semconv-1.28-log-bodies"),
    pytest.param({}, [log("gen_ai.user.message", {"content": "hi"}), log("gen_ai.choice", [1, 2, 3]),
                      log("gen_ai.assistant.message", 42), log("gen_ai.tool.message", {"content": None})], (), "hi", None,
                 id="semconv-1.28-log-bodies-odd-types"),
    pytest.param({"gen_ai.input.messages": js({"unexpected": "shape"}), "gen_ai.output.messages": js([1, None, {}])},
                 (), (), None, None, id="semconv-1.37-valid-json-wrong-shape"),
    pytest.param({"gen_ai.input.messages": "[" * 100_000 + "]" * 100_000}, (), (), None, None,
                 id="semconv-1.37-deeply-nested"),
])  # fmt: skip
def test_unparseable_messages_kept_as_text(attrs, logs, events, prompt: Optional[str], answer: Optional[str]) -> None:
    record = build({**BASE, **attrs}, logs, events=events)
    if prompt is not None:
        assert record["prompt"] == prompt
    if answer is not None:
        assert record["answer"] == answer


def test_openinference_plain_text_values() -> None:
    record = build({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "input.value": "What is 2+2?",
                    "input.mime_type": "text/plain", "output.value": "4", "output.mime_type": "text/plain",
                    "metadata": "{not json", "llm.invocation_parameters": "[1, 2"})  # fmt: skip
    assert (record["prompt"], record["answer"]) == ("What is 2+2?", "4")
    assert record["request_id"] == f"otel-{TRACE:032x}-{SPAN:016x}"


def test_deeply_nested_openinference_metadata() -> None:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    build({"openinference.span.kind": "LLM", "llm.model_name": "m", "metadata": deep, "output.mime_type": "application/json",
           "output.value": deep, "llm.invocation_parameters": deep})  # fmt: skip


# --- redact hooks --------------------------------------------------------------------------------------------

TOOL_SPAN = {**BASE, "gen_ai.input.messages": js([parts("user", "My card is 4111 1111 1111 1111")]),
             "gen_ai.output.messages": js([parts("assistant", {"type": "tool_call", "name": "charge",
                                                               "arguments": {"card": "4111 1111 1111 1111"}})])}  # fmt: skip


def test_redact_hook_edits_the_record() -> None:
    def hook(record: Dict[str, Any]) -> Dict[str, Any]:
        record["prompt"] = "[redacted]"
        record["metadata"]["redacted"] = True
        return record

    record = build(TOOL_SPAN, options=MappingOptions(redact=hook))
    assert record["prompt"] == "[redacted]" and record["metadata"]["redacted"] is True


def test_redact_hook_returning_none_drops_the_record() -> None:
    assert build_event(span(TOOL_SPAN), options=MappingOptions(redact=lambda record: None)) is None


def _no_content(record: Dict[str, Any]) -> None:
    meta = gen_ai(record)
    assert "prompt" not in record and "answer" not in record
    assert "messages" not in meta and "tool_calls" not in meta  # tool-call arguments are content too
    assert meta["content_captured"] is False
    assert (record["prompt_tokens"], record["completion_tokens"]) == (10, 5)
    assert "4111" not in json.dumps(record)


def test_redact_hook_that_raises_keeps_the_bill_without_content() -> None:
    def hook(record: Dict[str, Any]) -> Dict[str, Any]:
        raise RuntimeError("pii service down")

    _no_content(build(TOOL_SPAN, options=MappingOptions(redact=hook)))


def test_redact_hook_that_breaks_the_record_then_raises() -> None:
    def hook(record: Dict[str, Any]) -> Dict[str, Any]:
        del record["metadata"]
        raise RuntimeError("half-way")

    record = build(TOOL_SPAN, options=MappingOptions(redact=hook))
    assert "prompt" not in record and "answer" not in record and record["prompt_tokens"] == 10


def test_redact_hook_returning_a_non_record_fails_closed() -> None:
    _no_content(build(TOOL_SPAN, options=MappingOptions(redact=lambda record: "oops")))  # type: ignore[arg-type,return-value]


# --- not GenAI at all -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attrs", [
    pytest.param({"http.request.method": "POST", "url.path": "/v1/chat/completions", "http.response.status_code": 200,
                  "server.address": "api.openai.com", "http.route": "/v1/chat/completions"}, id="http-server"),
    pytest.param({"db.system.name": "postgresql", "db.operation.name": "SELECT", "db.collection.name": "users",
                  "db.query.text": "SELECT * FROM users WHERE id = $1", "db.system": "postgresql"}, id="db"),
    pytest.param({"messaging.system": "kafka", "messaging.operation.name": "send"}, id="messaging"),
    pytest.param({"session.id": "s1", "user.id": "u1", "enduser.id": "u1"}, id="ids-only"),
    pytest.param({}, id="empty"),
])  # fmt: skip
def test_non_genai_spans(attrs: Dict[str, Any]) -> None:
    view = span(attrs, name="GET /", kind="SERVER")
    assert is_genai(view.attributes) is False
    assert classify(view).span_class is SpanClass.NONE
    assert build_event(view) is None
    assert build_event(view, [LogView(TRACE, SPAN, "gen_ai.user.message", {"content": "x"})]) is None


def test_parts_that_are_not_a_list_are_ignored_not_raised() -> None:
    """Found by tests/test_properties.py: ``{"parts": true}`` raised TypeError out of the mapping."""
    from promptwall_otel.mapping.messages import from_parts_message

    for parts in (True, 3, "text", {"type": "text"}, None):
        message = from_parts_message({"role": "user", "parts": parts}, "user")
        assert message["role"] == "user" and "content" not in message


def test_unhashable_types_in_message_json_are_ignored_not_raised() -> None:
    """Found by tests/test_properties.py: ``{"type": []}`` raised TypeError (unhashable) out of the mapping."""
    from promptwall_otel.mapping.messages import messages_from

    for raw in ('{"type": []}', '[{"type": {}}]', '[{"role": "user", "content": [{"type": []}]}]',
                '{"output": [{"type": [1]}]}', '[{"object": "response", "output": [{"type": {"a": 1}}]}]'):
        messages_from(raw, "user")  # must not raise
