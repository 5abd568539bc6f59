"""Logfire and Pydantic AI spans.

Pydantic AI writes the semantic conventions on its ``chat {model}`` spans
(handled by :mod:`.semconv`); its ``agent run``/``invoke_agent`` span sums the
usage of the run. Logfire's own ``instrument_openai`` writes the raw request
and response as ``request_data``/``response_data`` JSON.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from .messages import Message, messages_from
from .values import parse_json

ALL_MESSAGES = "pydantic_ai.all_messages"
FINAL_RESULT = "final_result"
AGENT_NAME = ("agent_name",)
MODEL = ("model_name",)  # Pydantic AI agent run spans
REQUEST_DATA = "request_data"
RESPONSE_DATA = "response_data"


def is_agent_run(attrs: Mapping[str, Any]) -> bool:
    return ALL_MESSAGES in attrs or "agent_name" in attrs or "all_messages_events" in attrs


def messages(attrs: Mapping[str, Any]) -> Tuple[List[Message], List[Message]]:
    inputs: List[Message] = []
    outputs: List[Message] = []
    if attrs.get(REQUEST_DATA) is not None:
        inputs = messages_from(attrs[REQUEST_DATA], "user")
    response = parse_json(attrs.get(RESPONSE_DATA))
    if isinstance(response, Mapping):
        reply = response.get("message") or response.get("choices") or response
        outputs = messages_from(reply, "assistant")
    if not inputs and attrs.get(ALL_MESSAGES) is not None:
        history = messages_from(attrs[ALL_MESSAGES], "user")
        last_answer = next((i for i in range(len(history) - 1, -1, -1) if history[i]["role"] == "assistant"), None)
        inputs = history[:last_answer] if last_answer is not None else history
        outputs = outputs or (history[last_answer:last_answer + 1] if last_answer is not None else [])
    if not outputs and attrs.get(FINAL_RESULT) is not None:
        outputs = messages_from(attrs[FINAL_RESULT], "assistant")
    return inputs, outputs


def response_usage(attrs: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """OpenAI-style usage inside ``response_data`` (older Logfire releases have no gen_ai.usage.*)."""
    response = parse_json(attrs.get(RESPONSE_DATA))
    usage = response.get("usage") if isinstance(response, Mapping) else None
    return usage if isinstance(usage, Mapping) else None
