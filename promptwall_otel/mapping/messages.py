"""One message model for every way producers write conversations.

Semantic-convention parts (``{role, parts: [{type: text, content}]}``),
OpenAI chat messages (``{role, content, tool_calls}``), the 1.28 message
events, AI SDK parts (``{type: text, text}``) and OpenAI Responses-API
payloads (a ``response`` object, alone or in a list, and its typed input and
output items) all become one :data:`Message` dict; the record then only needs
"the latest user turn" and "the first answer".

Invariants: a tool's result is never a ``user`` turn's text (it becomes a
``tool`` message, or a ``tool_results`` entry of the message that carried it),
and reasoning is never an answer (it goes to ``reasoning``).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .values import content as clean_content
from .values import parse_json, repair, text

ToolCall = Tuple[str, str]
"""(name, arguments as text)."""

Message = Dict[str, Any]
"""``{"role", "content"?, "tool_calls"?: [{"name", "arguments"}], "tool_results"?, "reasoning"?, "finish_reason"?}``.

A plain dict in exactly the shape ``metadata.gen_ai.messages`` carries: the
record then uses the messages as they are, with no second set of objects
(building those was a measurable part of mapping a span).
"""


def message(role: str, text: str = "", tool_calls: Sequence[ToolCall] = (), finish_reason: Optional[str] = None) -> Message:
    """A :data:`Message`; empty fields are left out."""
    item: Message = {"role": role}
    if text:
        item["content"] = text
    if tool_calls:
        item["tool_calls"] = [{"name": name, "arguments": args} for name, args in tool_calls]
    if finish_reason:
        item["finish_reason"] = finish_reason
    return item


def arguments_text(value: Any) -> str:
    """Tool-call arguments as compact JSON text, however the producer formatted them."""
    if value is None:
        return ""
    if isinstance(value, (str, bytes)):
        parsed = parse_json(value)
        if parsed is None or isinstance(parsed, str):
            return text(value) or ""
        value = parsed
    try:
        return repair(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))
    except (TypeError, ValueError):
        return repair(str(value))


REDACTION_MARKERS = frozenset({"__REDACTED__"})
"""What producers write instead of content they were told to hide (OpenInference)."""


def content_text(content: Any) -> str:
    """Text of a content value: a string, a list of parts, or a part."""
    if content is None:
        return ""
    if isinstance(content, (str, bytes)):
        found = clean_content(content)
        return "" if found in REDACTION_MARKERS else found
    if isinstance(content, dict):
        kind = content.get("type")
        if kind in (None, "text", "input_text", "output_text") or "text" in content:
            return text(content.get("text", content.get("content"))) or ""
        if kind == "refusal":  # Responses API: the model declined; that is its answer
            return text(content.get("refusal")) or ""
        return ""
    if isinstance(content, (list, tuple)):
        return "\n".join(filter(None, (content_text(part) for part in content)))
    return text(content) or ""


def _tool_call(raw: Any) -> Optional[ToolCall]:
    if not isinstance(raw, dict):
        return None
    function = raw.get("function") if isinstance(raw.get("function"), dict) else raw
    name = text(function.get("name") or raw.get("toolName") or raw.get("tool_name"))
    if not name:
        return None
    return name, arguments_text(function.get("arguments", raw.get("args", raw.get("input"))))


def _tool_calls(raw: Any) -> List[ToolCall]:
    raw = parse_json(raw) if isinstance(raw, str) else raw
    if not isinstance(raw, (list, tuple)):
        return []
    return [call for call in (_tool_call(item) for item in raw) if call]


def from_parts_message(raw: Dict[str, Any], default_role: str) -> Message:
    """A semantic-convention message: ``{role, parts: [...], finish_reason}`` (1.37+).

    The most common shape of all (one clean text part), so it takes a short path. ``raw`` is a
    dict (annotated so: compiled, its reads are the dict's own).
    """
    role = raw.get("role")
    item: Message = {"role": role if type(role) is str and role else text(role) or default_role}
    parts = raw.get("parts")
    body = None
    if type(parts) is list and len(parts) == 1 and type(parts[0]) is dict:
        first: Dict[str, Any] = parts[0]
        if first.get("type") == "text":
            body = first.get("content")
    if type(body) is str and body.isascii():
        if body:
            item["content"] = body
    else:
        _fill_from_parts(item, parts)
    finish = raw.get("finish_reason")
    if finish is not None:
        finish = finish if type(finish) is str else text(finish)
        if finish:
            item["finish_reason"] = finish
    return item


def _fill_from_parts(item: Message, parts: Any) -> None:
    texts: List[str] = []
    calls: List[Dict[str, str]] = []
    results: List[str] = []
    # A tool's return value is the text of a tool message only; under any other role (some producers
    # put it in a user message) it is kept aside, so it never reads as what the user wrote.
    results_are_text = item["role"] == "tool"
    for part in parts if type(parts) is list else ():  # producers' JSON: anything can stand here
        if type(part) is not dict:
            continue
        kind = part.get("type")
        if kind == "text":
            body = part.get("content", part.get("text"))
            texts.append(body if type(body) is str and body.isascii() else clean_content(body))
        elif kind == "tool_call":
            name = text(part.get("name"))
            if name:
                calls.append({"name": name, "arguments": arguments_text(part.get("arguments"))})
        elif kind == "tool_call_response":
            (texts if results_are_text else results).append(_result_text(part.get("response", part.get("result"))))
        elif kind == "reasoning":
            _add_reasoning(item, clean_content(part.get("content")))
    body = texts[0] if len(texts) == 1 else "\n".join(filter(None, texts))
    if body:
        item["content"] = body
    if calls:
        item["tool_calls"] = calls
    _add_results(item, results)


_TOOL_RESULT_PARTS = frozenset({"tool_result", "tool-result", "tool_call_response", "function_call_output"})


def _is_one_of(value: Any, names: "frozenset[str]") -> bool:
    """``value in names`` for a value from a producer's JSON, which may be a list or a dict (unhashable)."""
    return type(value) is str and value in names
"""Content parts that carry a tool's return value: Anthropic, AI SDK, semconv, Responses API."""


def _result_text(value: Any) -> str:
    """A tool result as text: strings and text parts as they are, anything else as compact JSON."""
    if isinstance(value, (str, bytes, list, tuple)):
        found = content_text(value)
        if found or isinstance(value, (str, bytes)):
            return found
    return content_text(arguments_text(value))


def _part_result(part: Mapping[str, Any]) -> str:
    for key in ("content", "output", "result", "response"):
        if part.get(key) is not None:
            return _result_text(part[key])
    return ""


def _add_results(item: Message, results: List[str]) -> None:
    results = [r for r in results if r]
    if results:
        item["tool_results"] = results


def _add_reasoning(item: Message, body: str) -> None:
    if body:
        item["reasoning"] = item["reasoning"] + "\n" + body if "reasoning" in item else body


def from_chat_message(raw: Mapping[str, Any], default_role: str) -> Message:
    """An OpenAI-style chat message, 1.28 event body or AI SDK message."""
    if "parts" in raw and "content" not in raw:
        return from_parts_message(raw if type(raw) is dict else dict(raw), default_role)
    inner = raw.get("message")
    if isinstance(inner, dict):  # a 1.28 gen_ai.choice body
        item = from_chat_message(inner, default_role)
        if "tool_calls" not in item:
            item.update(message(item["role"], tool_calls=_tool_calls(raw.get("tool_calls"))))
        finish = text(raw.get("finish_reason"))
        if finish:
            item["finish_reason"] = finish
        return item
    content = raw.get("content")
    calls = _tool_calls(raw.get("tool_calls"))
    role = text(raw.get("role")) or default_role
    results: List[str] = []
    if isinstance(content, (list, tuple)):  # AI SDK parts may carry tool calls; several formats tool results
        calls += [c for c in (_tool_call(p) for p in content if isinstance(p, dict) and p.get("type") == "tool-call") if c]
        results = [_part_result(p) for p in content if isinstance(p, dict) and _is_one_of(p.get("type"), _TOOL_RESULT_PARTS)]
    body = content_text(content)
    if role == "tool" and not body:
        body, results = "\n".join(filter(None, results)), []
    item = message(role, body, calls, text(raw.get("finish_reason")))
    _add_results(item, results)
    return item


_RESPONSE_ITEMS = frozenset({
    "message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output", "reasoning",
    # built-in tools: no conversation text of their own
    "web_search_call", "file_search_call", "computer_call", "computer_call_output", "code_interpreter_call",
    "image_generation_call", "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
    "apply_patch_call", "apply_patch_call_output", "mcp_call", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "item_reference", "compaction",
})  # fmt: skip
"""``type`` of the OpenAI Responses API's input and output items."""


def _response_item(raw: Mapping[str, Any], default_role: str) -> Optional[Message]:
    """One Responses-API input or output item; None for items with no conversation text."""
    kind = raw.get("type")
    if kind == "message":
        return from_chat_message(raw, default_role)
    if kind in ("function_call", "custom_tool_call"):
        name = text(raw.get("name"))
        return message("assistant", tool_calls=[(name, arguments_text(raw.get("arguments", raw.get("input"))))]) if name else None
    if kind in ("function_call_output", "custom_tool_call_output"):
        return message("tool", _result_text(raw.get("output")))
    if kind == "reasoning":  # summaries when the model gives them, else its reasoning text
        item: Message = {"role": "assistant"}
        _add_reasoning(item, content_text(raw.get("summary")) or content_text(raw.get("content")))
        return item
    return None


def is_response(raw: Any) -> bool:
    """A Responses-API response object (``{"object": "response", "output": [...]}``)."""
    return type(raw) is dict and raw.get("object") == "response" and type(raw.get("output")) is list


def response_message(raw: Mapping[str, Any]) -> Message:
    """A whole response as one assistant message, as a chat completion's choice is one: its output
    messages' text, its function calls, its reasoning summaries."""
    merged: Message = {"role": "assistant"}
    texts: List[str] = []
    calls: List[Dict[str, str]] = []
    for entry in raw["output"]:
        item = _response_item(entry, "assistant") if type(entry) is dict else None
        if item is None:
            continue
        if "content" in item:
            texts.append(item["content"])
        calls.extend(item.get("tool_calls", ()))
        _add_reasoning(merged, item.get("reasoning", ""))
    body = "\n".join(texts) or content_text(raw.get("output_text"))
    if body:
        merged["content"] = body
    if calls:
        merged["tool_calls"] = calls
    incomplete = raw.get("incomplete_details")
    reason = text(incomplete.get("reason")) if type(incomplete) is dict else None
    if reason:
        merged["finish_reason"] = reason
    return merged


def messages_from(value: Any, default_role: str = "user") -> List[Message]:
    """Messages from any of the shapes above, given as structure or JSON text.

    A bare string is one message of ``default_role``; unparseable JSON text is
    kept as that string rather than lost.
    """
    if value is None:
        return []
    parsed = parse_json(value)
    if type(parsed) is not list:  # the usual is a list: straight to the loop below
        if parsed is None:
            if isinstance(value, (str, bytes)):
                body = content_text(value)
                return [message(default_role, body)] if body else []
            return []
        if isinstance(parsed, str):
            body = content_text(parsed)
            return [message(default_role, body)] if body else []
        if isinstance(parsed, dict):
            if is_response(parsed):
                return [response_message(parsed)]
            for key in ("messages", "choices"):
                if isinstance(parsed.get(key), list):
                    return messages_from(parsed[key], default_role)
            if "prompt" in parsed or "system" in parsed:  # AI SDK ai.prompt
                out = [message("system", content_text(parsed["system"]))] if parsed.get("system") else []
                return out + messages_from(parsed.get("prompt"), default_role)
            if "input" in parsed and ("model" in parsed or "instructions" in parsed):  # a Responses-API request
                out = [message("system", content_text(parsed["instructions"]))] if parsed.get("instructions") else []
                return out + messages_from(parsed["input"], default_role)
            parsed = [parsed]
        if not isinstance(parsed, (list, tuple)):
            return []
    out: List[Message] = []
    entry: Dict[str, Any]  # annotated: compiled, the tests below are the dict's own
    for item in parsed:
        if type(item) is dict:
            entry = item
            if "parts" in entry and "content" not in entry and "type" not in entry and "object" not in entry:
                out.append(from_parts_message(entry, default_role))  # the conventions' message, the usual:
                continue  # no other shape has parts alone
        if isinstance(item, dict):
            if is_response(item):
                out.append(response_message(item))
            elif _is_one_of(item.get("type"), _RESPONSE_ITEMS):
                found = _response_item(item, default_role)
                if found is not None:
                    out.append(found)
            else:
                out.append(from_chat_message(item, default_role))
        elif isinstance(item, str) and item.strip():
            out.append(message(default_role, item))
    return out


def system_instructions(value: Any) -> List[Message]:
    """``gen_ai.system_instructions``: a bare list of parts, as one system message."""
    parsed = parse_json(value)
    if isinstance(parsed, list):
        body = "\n".join(filter(None, (content_text(part) for part in parsed)))
        return [message("system", body)] if body else []
    return messages_from(value, "system")


def prompt_of(messages: Sequence[Message]) -> Optional[str]:
    """The latest user turn's text; without user turns, the last message's that is not a tool result.

    A user message holding only a tool result has no text (the result is in
    ``tool_results``), so the prompt is the turn the user wrote before it.
    """
    last: Optional[str] = None
    item: Dict[str, Any]  # a Message: spelled out, as compiled code knows only the builtin name
    for item in reversed(messages):
        body = item.get("content")
        if body:
            role = item["role"]
            if role == "user":
                return body
            if last is None and role != "tool":
                last = body
    return last


def answer_of(messages: Sequence[Message]) -> Optional[str]:
    """The first choice's text, or its tool calls written readably."""
    item: Dict[str, Any]
    for item in messages:
        body = item.get("content")
        if body:
            return body
        calls = item.get("tool_calls")
        if calls:
            return "\n".join(f"[tool call] {call['name']}({call['arguments']})" for call in calls)
    return None
