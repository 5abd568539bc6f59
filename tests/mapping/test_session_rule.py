"""Which id is the session: one the application named beats a conversation id a framework generated.

The rule is docs/mapping.md's ``session_id`` row; in-process inheritance of
it (ancestor spans, baggage) is pinned in tests/test_processor.py.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import pytest

from promptwall_otel.mapping import Inherited, build_event
from tests.mapping.test_dialects import span

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}


@pytest.mark.parametrize("attrs, inherited, session, conversation", [
    # the framework's id alone is the session (what every producer without an app session gives)
    ({"gen_ai.conversation.id": "run-1"}, Inherited(), "run-1", None),
    ({"gcp.vertex.agent.session_id": "adk-1"}, Inherited(), "adk-1", None),
    # an application session on the span itself, whatever its dialect
    ({"gen_ai.conversation.id": "run-1", "session.id": "app"}, Inherited(), "app", "run-1"),
    ({"gen_ai.conversation.id": "run-1", "promptwall.session_id": "pw"}, Inherited(), "pw", "run-1"),
    ({"gen_ai.conversation.id": "run-1", "traceloop.association.properties.session_id": "tl"}, Inherited(), "tl", "run-1"),
    ({"gen_ai.conversation.id": "run-1", "ai.telemetry.metadata.sessionId": "ai"}, Inherited(), "ai", "run-1"),
    ({"gen_ai.conversation.id": "run-1", "langfuse.session.id": "lf"}, Inherited(), "lf", "run-1"),
    # inherited from an ancestor or baggage: still the application's, still first
    ({"gen_ai.conversation.id": "run-1"}, Inherited(session_id="app"), "app", "run-1"),
    # an inherited conversation id (the agent span's) is a conversation id too
    ({}, Inherited(conversation_id="run-0"), "run-0", None),
    ({"gen_ai.conversation.id": "run-1"}, Inherited(conversation_id="run-0"), "run-1", None),
    # within one rank the nearest wins: the span's own application session beats an inherited one
    ({"session.id": "own"}, Inherited(session_id="app"), "own", None),
])  # fmt: skip
def test_session_rule(attrs: Dict[str, Any], inherited: Inherited, session: str, conversation: Optional[str]) -> None:
    record = build_event(span({**CHAT, **attrs}), inherited=inherited)
    assert record is not None
    assert record["session_id"] == session
    assert record["metadata"]["gen_ai"].get("conversation_id") == conversation


def test_resource_session_is_the_last_resort() -> None:
    resource = {"service.name": "svc", "promptwall.session_id": "deployment"}
    with_run = build_event(span({**CHAT, "gen_ai.conversation.id": "run-1"}, resource=resource))
    bare = build_event(span(CHAT, resource=resource))
    assert with_run is not None and bare is not None
    assert (with_run["session_id"], bare["session_id"]) == ("run-1", "deployment")
