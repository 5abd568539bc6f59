"""Trace-level billing rules: duplicates collapse, aggregates never billed on top of their calls."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from promptwall_otel.mapping import MappingOptions, SpanView
from promptwall_otel.mapping.ledger import TraceLedger
from promptwall_otel.record import validate_event

OPTIONS = MappingOptions()
TRACE = 0x1234


def span(span_id: int, parent: Optional[int], attrs: Dict[str, Any], start: int = 1_000, end: int = 2_000,
         trace: int = TRACE) -> SpanView:  # fmt: skip
    return SpanView(name=f"s{span_id}", trace_id=trace, span_id=span_id, parent_span_id=parent,
                    start_ns=start * 1_000_000, end_ns=end * 1_000_000, attributes=attrs)  # fmt: skip


def chat(tokens: Optional[tuple] = (10, 5), response_id: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    attrs: Dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                             "gen_ai.request.model": "gpt-4o-mini", **extra}  # fmt: skip
    if tokens:
        attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"] = tokens
    if response_id:
        attrs["gen_ai.response.id"] = response_id
    return attrs


AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner", "gen_ai.system": "openai",
         "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 15}


def billed(records: List[Dict[str, Any]]) -> int:
    assert all(validate_event(r) == [] for r in records)
    return sum(r.get("total_tokens", 0) for r in records)


def test_agent_with_calls_bills_the_calls_only() -> None:
    ledger = TraceLedger()
    records = ledger.map_batch([span(2, 1, chat((10, 5))), span(3, 1, chat((20, 10))), span(1, None, AGENT)], OPTIONS)
    assert [r["total_tokens"] for r in records] == [15, 30]
    assert billed(records) == 45


def test_agent_calls_in_an_earlier_batch_still_suppress_the_aggregate() -> None:
    ledger = TraceLedger()
    first = ledger.map_batch([span(2, 1, chat((10, 5)))], OPTIONS)
    second = ledger.map_batch([span(1, None, AGENT)], OPTIONS)
    assert billed(first) == 15 and second == []


def test_agent_alone_is_billed_from_its_aggregate() -> None:
    """No call with usage was seen beneath it: its own usage is the only bill there is."""
    ledger = TraceLedger()
    (record,) = ledger.map_batch([span(2, 1, chat(tokens=None)), span(1, None, AGENT)], OPTIONS)[1:]
    assert record["total_tokens"] == 45
    assert record["metadata"]["gen_ai"]["usage_source"] == "aggregate"
    assert record["request_id"] == f"otel-{TRACE:032x}-{1:016x}"


def test_a_call_ending_after_its_billed_aggregate_keeps_its_tokens_out_of_the_bill() -> None:
    ledger = TraceLedger()
    aggregate = ledger.map_batch([span(1, None, AGENT)], OPTIONS)
    late = ledger.map_batch([span(2, 1, chat((10, 5)))], OPTIONS)
    assert billed(aggregate) == 45 and billed(late) == 0
    assert late[0]["metadata"]["gen_ai"]["usage"]["total_tokens"] == 15
    assert late[0]["metadata"]["gen_ai"]["billed_in"] == aggregate[0]["request_id"]


def test_aggregate_without_usage_is_not_an_event() -> None:
    agent = {k: v for k, v in AGENT.items() if not k.startswith("gen_ai.usage")}
    assert TraceLedger().map_batch([span(1, None, agent)], OPTIONS) == []


def test_nested_duplicate_in_one_batch_merges_and_bills_once() -> None:
    inner = span(2, 1, chat((9, 5)))  # e.g. OpenInference: usage, no response id
    outer = span(1, None, chat((9, 5), response_id="chatcmpl-abcdefghijklmnop", **{"gen_ai.conversation.id": "c-1"}))
    (record,) = TraceLedger().map_batch([inner, outer], OPTIONS)
    assert record["total_tokens"] == 14
    assert record["request_id"].startswith("gen-"), "the record keyed by response id leads"
    assert record["session_id"] == "c-1"
    assert record["metadata"]["otel"]["duplicate_spans"] == [f"{2:016x}"]


def test_emitting_early_gives_the_same_records_and_holds_back_only_possible_twins() -> None:
    """The exporter encodes records as they are built (``emit``); merges must come out as without it."""

    def batch() -> List[SpanView]:
        return [
            span(2, 1, chat((9, 5))),  # inner twin of 1: must wait for its parent
            span(1, None, chat((9, 5), response_id="chatcmpl-abcdefghijklmnop")),
            span(11, None, chat((3, 4), response_id="chatcmpl-qrstuvwxyzabcdef"), trace=2),  # a call on its own
            span(21, None, chat((4, 5)), trace=3),  # streaming: the outer twin ends first
            span(22, 21, chat((4, 5)), trace=3),
            span(32, 31, chat((1, 1)), trace=4),  # a call under an agent
            span(31, None, AGENT, trace=4),
        ]

    emitted: List[Dict[str, Any]] = []
    held = TraceLedger().map_batch(batch(), OPTIONS, emit=emitted.append)
    plain = TraceLedger().map_batch(batch(), OPTIONS)
    by_id = {r["request_id"]: r for r in plain}
    assert sorted(r["request_id"] for r in emitted + held) == sorted(by_id)
    assert all(r == by_id[r["request_id"]] for r in emitted + held)
    assert len(plain) == 4 and billed(plain) == 14 + 7 + 9 + 2
    assert {r["metadata"]["otel"]["span_id"] for r in emitted} == {f"{11:016x}", f"{32:016x}"}


def test_nested_duplicate_across_batches_is_dropped() -> None:
    ledger = TraceLedger()
    first = ledger.map_batch([span(2, 1, chat((9, 5)))], OPTIONS)
    second = ledger.map_batch([span(1, None, chat((9, 5)))], OPTIONS)
    assert billed(first) == 14 and second == []


def test_inner_span_ending_after_outer_is_still_one_call() -> None:
    """Streaming: the inner instrumentation's span can end after the outer one."""
    ledger = TraceLedger()
    records = ledger.map_batch([span(1, None, chat((4, 5))), span(2, 1, chat((4, 5)))], OPTIONS)
    assert len(records) == 1 and billed(records) == 9


def test_twin_without_usage_does_not_swallow_the_bill() -> None:
    ledger = TraceLedger()
    first = ledger.map_batch([span(2, 1, chat(tokens=None))], OPTIONS)
    second = ledger.map_batch([span(1, None, chat((9, 5)))], OPTIONS)
    assert billed(first) == 0 and billed(second) == 14


def test_separate_traces_share_a_request_id_through_the_response_id() -> None:
    rid = "chatcmpl-0123456789abcdef"
    a = TraceLedger().map_batch([span(1, None, chat(response_id=rid), trace=1)], OPTIONS)
    b = TraceLedger().map_batch([span(7, None, chat(response_id=rid), trace=2, start=1_001)], OPTIONS)
    assert a[0]["request_id"] == b[0]["request_id"]


def test_short_or_reused_response_ids_do_not_merge_distinct_calls() -> None:
    ledger = TraceLedger()
    short = ledger.map_batch([span(1, None, chat(response_id="chatcmpl-7"), trace=1),
                              span(2, None, chat(response_id="chatcmpl-7"), trace=2)], OPTIONS)  # fmt: skip
    assert len({r["request_id"] for r in short}) == 2
    rid = "chatcmpl-0123456789abcdef"
    apart = ledger.map_batch([span(1, None, chat(response_id=rid), trace=3, start=0),
                              span(1, None, chat(response_id=rid), trace=4, start=60_000)], OPTIONS)  # fmt: skip
    assert len({r["request_id"] for r in apart}) == 2


def test_sibling_calls_are_distinct() -> None:
    records = TraceLedger().map_batch([span(2, 1, chat()), span(3, 1, chat()), span(4, 1, chat())], OPTIONS)
    assert len(records) == 3 and billed(records) == 45


def test_memory_is_bounded() -> None:
    ledger = TraceLedger(max_traces=100)
    for trace in range(1, 1001):
        ledger.map_batch([span(2, 1, chat(), trace=trace)], OPTIONS)  # roots never seen
    assert len(ledger._traces) == 100


def test_a_trace_is_forgotten_once_its_root_ended() -> None:
    ledger = TraceLedger()
    ledger.map_batch([span(2, 1, chat()), span(1, None, {"http.route": "/chat"})], OPTIONS)
    ledger.map_batch([span(3, None, chat(), trace=7)], OPTIONS)
    assert TRACE in ledger._traces, "a non-GenAI root does not reach the ledger"
    assert 7 not in ledger._traces


def test_traces_not_seen_for_a_while_are_forgotten() -> None:
    ledger = TraceLedger(ttl_s=0.05)
    ledger.map_batch([span(2, 1, chat(), trace=1)], OPTIONS)
    import time

    time.sleep(0.1)
    ledger.map_batch([span(2, 1, chat(), trace=2)], OPTIONS)
    assert list(ledger._traces) == [2]


# --- one call instrumented twice in separate traces: one request_id, the fullest record -------------

RID = "chatcmpl-0123456789abcdef"


def sdk_span(trace: int, span_id: int = 1) -> SpanView:
    """A provider SDK's own span of the call: usage, no content."""
    return span(span_id, None, chat((9, 5), response_id=RID), trace=trace)


def instrumented_span(trace: int, span_id: int = 1) -> SpanView:
    """An instrumentation's span of the same call, in a trace of its own: usage and content."""
    messages = {"gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]',
                "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}]}]',
                "user.id": "u-1"}  # fmt: skip
    return span(span_id, None, chat((9, 5), response_id=RID, **messages), trace=trace, start=1_002)


def test_records_sharing_a_request_id_merge_and_the_fullest_leads() -> None:
    for order in ((sdk_span(1), instrumented_span(2)), (instrumented_span(2), sdk_span(1))):
        emitted: List[Dict[str, Any]] = []
        held = TraceLedger().map_batch(list(order), OPTIONS, emit=emitted.append)
        (record,) = emitted + held
        assert (record["prompt"], record["answer"], record["end_user_id"]) == ("Hi", "Hello", "u-1")
        assert billed([record]) == 14
        assert record["metadata"]["otel"]["trace_id"] == f"{2:032x}", "the instrumentation's span leads"
        assert record["metadata"]["otel"]["duplicate_spans"] == [f"{1:016x}"]


def test_a_response_id_seen_once_in_a_batch_is_still_emitted_early() -> None:
    emitted: List[Dict[str, Any]] = []
    held = TraceLedger().map_batch([sdk_span(1), span(1, None, chat(response_id="chatcmpl-other-0123456789"), trace=3)],
                                   OPTIONS, emit=emitted.append)  # fmt: skip
    assert len(emitted) == 2 and held == []


def test_a_copy_in_a_later_batch_is_never_sent_again() -> None:
    """The backend keeps the first record it stored under a request_id: a later copy is dropped (and,
    when it held more than the first, logged)."""
    ledger = TraceLedger()
    (first,) = ledger.map_batch([sdk_span(1)], OPTIONS)
    assert ledger.map_batch([instrumented_span(2)], OPTIONS) == []
    assert ledger.map_batch([sdk_span(5)], OPTIONS) == []
    assert "prompt" not in first and billed([first]) == 14
