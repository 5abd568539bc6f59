"""The newest GenAI conventions (semantic-conventions-genai) beside the older spellings, and their prices.

Each case is a span as its producer writes it; the record must carry the counts
PromptWall bills and the cost the shipped price table gives for them.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

import pytest

from promptwall_otel.mapping import MappingOptions, SpanClass, SpanView, build_event, classify
from promptwall_otel.mapping.ledger import TraceLedger
from promptwall_otel.mapping.prices import default_table
from promptwall_otel.record import validate_event

TRACE, START = 0xABC, 1_764_600_000_000_000_000


def span(attrs: Dict[str, Any], span_id: int = 1, parent: Optional[int] = None) -> SpanView:
    return SpanView("s", TRACE, span_id, START, START + 10**9, dict(attrs), parent_span_id=parent)


def record(attrs: Dict[str, Any]) -> Dict[str, Any]:
    found = build_event(span(attrs))
    assert found is not None and validate_event(found) == []
    return found


def usage(found: Dict[str, Any]) -> Dict[str, Any]:
    return found["metadata"]["gen_ai"].get("usage", {})


CLAUDE = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5"}
GEMINI = {"gen_ai.operation.name": "generate_content", "gen_ai.provider.name": "gcp.gemini",
          "gen_ai.request.model": "gemini-2.5-flash"}  # fmt: skip
GPT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}


@pytest.mark.parametrize("write_key", [
    "gen_ai.usage.cache_write.input_tokens",  # semantic-conventions-genai
    "gen_ai.usage.cache_creation.input_tokens",  # 1.40-1.41
    "gen_ai.usage.cache_creation_input_tokens",  # OpenLLMetry
])  # fmt: skip
@pytest.mark.parametrize("read_key", ["gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"])
def test_cache_reads_and_writes_are_priced_at_their_own_rates(write_key: str, read_key: str) -> None:
    found = record({**CLAUDE, "gen_ai.usage.input_tokens": 1250, read_key: 1000, write_key: 200,
                    "gen_ai.usage.output_tokens": 100})  # fmt: skip
    assert (found["prompt_tokens"], found["completion_tokens"]) == (1250, 100)
    assert usage(found) == {"cache_read_tokens": 1000, "cache_write_tokens": 200}
    # Claude Sonnet 4.5: input 3.00, cache read 0.30, cache write 3.75, output 15.00 per 1M.
    assert found["cost_usd"] == pytest.approx((50 * 3.0 + 1000 * 0.3 + 200 * 3.75 + 100 * 15.0) / 1e6, abs=1e-12)


def test_newest_spelling_wins_over_an_older_one_on_the_same_span() -> None:
    found = record({**CLAUDE, "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.cache_write.input_tokens": 300,
                    "gen_ai.usage.cache_creation.input_tokens": 999, "gen_ai.usage.output_tokens": 1})  # fmt: skip
    assert usage(found)["cache_write_tokens"] == 300


def test_reasoning_is_billed_as_output_once() -> None:
    included = record({**GEMINI, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 400,
                       "gen_ai.usage.reasoning.output_tokens": 300})  # fmt: skip
    assert included["completion_tokens"] == 400, "the conventions count reasoning in the output: not added again"
    assert included["cost_usd"] == pytest.approx((100 * 0.3 + 400 * 2.5) / 1e6, abs=1e-12)
    # A producer that followed Gemini's API (candidates exclude thoughts): output 100 < reasoning 300.
    apart = record({**GEMINI, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 100,
                    "gen_ai.usage.reasoning.output_tokens": 300})  # fmt: skip
    assert apart["completion_tokens"] == 400 and apart["total_tokens"] == 500
    assert apart["cost_usd"] == pytest.approx((100 * 0.3 + 400 * 2.5) / 1e6, abs=1e-12)
    assert any("reasoning" in w for w in apart["metadata"]["gen_ai"]["mapping_warnings"])
    older = record({**GEMINI, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 400,
                    "gen_ai.usage.reasoning_tokens": 300})  # fmt: skip
    assert usage(older) == {"reasoning_tokens": 300} and older["completion_tokens"] == 400


def test_per_modality_counts_are_kept_and_make_the_counts_only_without_a_total() -> None:
    with_total = record({**GPT, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.audio.input_tokens": 40,
                         "gen_ai.usage.text.input_tokens": 60, "gen_ai.usage.output_tokens": 20,
                         "gen_ai.usage.audio.output_tokens": 15})  # fmt: skip
    assert (with_total["prompt_tokens"], with_total["completion_tokens"]) == (100, 20)
    assert usage(with_total) == {"audio_input_tokens": 40, "text_input_tokens": 60, "audio_output_tokens": 15}
    only_parts = record({**GPT, "gen_ai.usage.text.input_tokens": 60, "gen_ai.usage.image.input_tokens": 30,
                         "gen_ai.usage.video.input_tokens": 10, "gen_ai.usage.text.output_tokens": 20})  # fmt: skip
    assert (only_parts["prompt_tokens"], only_parts["completion_tokens"], only_parts["total_tokens"]) == (100, 20, 120)
    assert only_parts["cost_usd"] == pytest.approx((100 * 2.5 + 20 * 10.0) / 1e6, abs=1e-12)


def test_time_to_first_chunk_in_seconds() -> None:
    found = record({**GPT, "gen_ai.usage.input_tokens": 1, "gen_ai.response.time_to_first_chunk": 0.25})
    assert found["metadata"]["gen_ai"]["ttft_ms"] == 250.0


def test_older_spellings_still_bill() -> None:
    found = record({"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.prompt_tokens": 7,
                    "gen_ai.usage.completion_tokens": 3})  # fmt: skip
    assert (found["provider"], found["prompt_tokens"], found["completion_tokens"]) == ("openai", 7, 3)


@pytest.mark.parametrize("operation", ["plan", "create_memory", "search_memory", "update_memory", "upsert_memory",
                                       "delete_memory", "create_memory_store", "delete_memory_store",
                                       "apply_guardrail", "run_guardrail", "execute_tool", "retrieval"])  # fmt: skip
def test_new_operations_are_context_never_billed(operation: str) -> None:
    view = span({"gen_ai.operation.name": operation, "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5})
    assert classify(view).span_class is SpanClass.CONTEXT
    assert build_event(view) is None


def test_a_workflow_carrying_its_calls_usage_is_not_billed_on_top() -> None:
    workflow = span({"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "triage",
                     "gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 15}, span_id=1)  # fmt: skip
    assert classify(workflow).span_class is SpanClass.AGGREGATE
    call = span({**GPT, "gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 15}, span_id=2, parent=1)
    records = TraceLedger().map_batch([call, workflow], MappingOptions())
    assert [r["total_tokens"] for r in records] == [45]


def test_every_shipped_price_states_its_source_and_date() -> None:
    table = default_table()
    assert table.sources, "prices.json names its sources"
    for source in table.sources.values():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", source["date"]) and source["what"]
    for model, prices in table.models.items():
        assert prices.get("source") in table.sources, model
        assert prices["input"] >= 0 and prices["output"] >= 0, model
        assert prices.get("cached_input", prices["input"]) <= prices["input"], f"{model}: a cache read costs less"
        assert prices.get("cache_write", prices["input"]) >= prices["input"], f"{model}: a cache write costs more"
    assert table.source_of("claude-sonnet-4-5-20250929").endswith("(2026-11-20)")
    assert table.source_of("claude-3-opus-20240229").endswith("(2025-10-05)")
    assert table.source_of("not-a-model") is None
