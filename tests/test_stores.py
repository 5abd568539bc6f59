"""The in-process stores stay within their caps and keep the newest entries.

Spans started and never ended (an abandoned generator, a leaked context) fill
the context store; content logs for spans never exported fill the content
store. Either way the store holds at most its cap, what was added last is still
there, and what was added first is gone.
"""

from __future__ import annotations

from promptwall_otel._stores import ContentStore, ContextStore
from promptwall_otel.mapping import Inherited, LogView, SpanView

TRACE = 0x5B8EFFF798038103D269B633813FC60C


def _call(span_id: int, response_id: str = "") -> SpanView:
    attributes = {"gen_ai.response.id": response_id} if response_id else {}
    return SpanView("chat", TRACE, span_id, 1, 2, attributes)


def test_a_full_context_store_drops_its_oldest_and_keeps_its_newest() -> None:
    store = ContextStore(max_spans=1000)
    for span_id in range(1, 5001):
        store.put(span_id, Inherited(session_id=f"s{span_id}"))
        assert len(store) <= 1000
    assert len(store) > 900  # eviction takes a small slice at a time, not half the store
    assert store.get(1) is None and store.get(3000) is None
    newest = store.get(5000)
    assert newest is not None and newest.session_id == "s5000"
    assert all(store.get(span_id) is not None for span_id in range(4901, 5001))


def test_a_full_context_store_still_takes_what_the_export_thread_left() -> None:
    store = ContextStore(max_spans=64)
    for span_id in range(1, 65):
        store.put(span_id, Inherited(user_id="u"))
    for span_id in range(1, 64, 2):  # taken by their spans' export meanwhile
        store.discard(span_id)
    for span_id in range(65, 200):
        store.put(span_id, Inherited(user_id="v"))
    assert len(store) <= 64
    assert store.get(199) is not None and store.get(2) is None


def test_a_full_content_store_drops_its_oldest_spans_logs() -> None:
    store = ContentStore(max_spans=256)
    for span_id in range(1, 2001):
        store.add(LogView(TRACE, span_id, "gen_ai.user.message", {"content": f"q{span_id}"}))
        store.add(LogView(TRACE, span_id, "gen_ai.evaluation.result", None, {"gen_ai.evaluation.name": "x"}))
        store.add(LogView(TRACE, 0, "gen_ai.evaluation.result", None,
                          {"gen_ai.evaluation.name": "x", "gen_ai.response.id": f"r{span_id}"}))
        assert len(store) <= 256
    assert store.pop_for(_call(1)) == []
    kept = store.pop_for(_call(2000, "r2000"))
    assert [log.event_name for log in kept] == ["gen_ai.user.message", "gen_ai.evaluation.result",
                                                "gen_ai.evaluation.result"]
    assert kept[0].body == {"content": "q2000"}
    # the response-id evaluations have their own cap: the first ones are gone, never joined
    late = store.pop_for(_call(9999, "r1"))
    assert late == []
