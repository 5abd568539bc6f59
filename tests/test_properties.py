"""Property-based: whatever a producer puts on a span, the app never sees an exception and every record
is stored or rejected with a reason, counted, at a real backend.

Hypothesis makes real SDK spans with arbitrary values under the attribute keys
the mapping reads (every dialect's), arbitrary span events and arbitrary
message JSON; the exporter maps and sends them to the local backend.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from promptwall_otel import PromptWallSpanExporter, validate_event
from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY

KEYS = [
    "gen_ai.operation.name", "gen_ai.system", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.response.id", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens", "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
    "gen_ai.prompt", "gen_ai.completion", "gen_ai.conversation.id", "gen_ai.request.temperature",
    "gen_ai.response.finish_reasons", "gen_ai.tool.name", "gen_ai.agent.name", "gen_ai.prompt.0.role",
    "gen_ai.prompt.0.content", "gen_ai.completion.0.content", "llm.input_messages.0.message.content",
    "llm.output_messages.0.message.content", "llm.token_count.prompt", "llm.token_count.completion", "llm.model_name",
    "input.value", "output.value", "openinference.span.kind", "ai.prompt.messages", "ai.response.text",
    "ai.usage.promptTokens", "ai.usage.completionTokens", "ai.model.id", "session.id", "user.id",
    "promptwall.use_case", "promptwall.metadata.tier", "error.type", "gen_ai.usage.cost",
]  # fmt: skip
MESSAGE_KEYS = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions", "gen_ai.prompt",
                "gen_ai.completion", "input.value", "output.value", "ai.prompt.messages"}  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["role", "parts", "type", "content", "text", "finish_reason", "tool_calls", "id", "name", "arguments",
         "messages", "output", "object", "response"]) | st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip
message_json = st.one_of(json_values.map(json.dumps), st.text(max_size=60),
                         st.just('[{"role":"user","parts":[{"type":"text","content":"hi"}]}]'))  # fmt: skip
scalar = st.one_of(st.text(max_size=60), st.integers(-(2**70), 2**70), st.booleans(),
                   st.floats(allow_nan=True, allow_infinity=True))  # fmt: skip
attribute_value = st.one_of(scalar, st.lists(st.text(max_size=20), max_size=4),
                            st.lists(st.integers(-(2**64), 2**64), max_size=4))  # fmt: skip
span_attributes = st.dictionaries(st.sampled_from(KEYS), attribute_value, max_size=12).flatmap(
    lambda attrs: st.fixed_dictionaries({key: message_json for key in attrs if key in MESSAGE_KEYS}).map(
        lambda messages: {**attrs, **messages}))  # fmt: skip
span_event = st.tuples(st.sampled_from(["gen_ai.content.prompt", "gen_ai.content.completion", "gen_ai.user.message",
                                        "gen_ai.choice", "exception", "anything"]),
                       st.dictionaries(st.sampled_from(["gen_ai.prompt", "gen_ai.completion", "content", "message",
                                                        "index", "exception.message"]), attribute_value, max_size=3))
spans_strategy = st.lists(st.tuples(span_attributes, st.lists(span_event, max_size=3), st.booleans()),
                          min_size=1, max_size=6)  # fmt: skip


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[API_KEY]) as running:
        yield running


@pytest.fixture(scope="module")
def exporter(backend: LocalBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromptWallSpanExporter]:
    target = PromptWallSpanExporter(api_key=API_KEY, base_url=backend.url,
                                    spool_dir=str(tmp_path_factory.mktemp("spool")))  # fmt: skip
    yield target
    target.shutdown()


def make_spans(specs: List[Any]) -> List[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("property")
    run = uuid.uuid4().hex
    for index, (attributes, events, failed) in enumerate(specs):
        with tracer.start_as_current_span("chat") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.response.id", f"resp-{run}-{index}")  # distinct calls; overridden at times
            span.set_attributes(attributes)
            for name, event_attributes in events:
                span.add_event(name, event_attributes)
            if failed:
                span.set_status(Status(StatusCode.ERROR, "boom"))
    return list(memory.get_finished_spans())


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])  # fmt: skip
@given(specs=spans_strategy)
def test_any_span_becomes_a_valid_record_or_a_counted_rejection(exporter: PromptWallSpanExporter, specs: List[Any]) -> None:
    before = exporter.stats_snapshot()
    encoded = exporter.encode_spans(make_spans(specs))  # raises nothing, whatever the spans hold
    (lines,) = encoded  # one outlet: PromptWall
    for line in lines:
        record = json.loads(line)
        assert validate_event(record) == [], record
        assert _finite(record), "NaN or infinity in a record"
    exporter.offer(encoded)
    assert exporter.force_flush(20_000)
    after = exporter.stats_snapshot()
    delta: Dict[str, int] = {name: after[name] - before[name] for name in after}
    assert delta["exported"] + delta["duplicates"] + delta["rejected"] == len(lines), delta
    assert delta["dropped"] == delta["dead_lettered"] == 0, delta


def test_the_property_test_reaches_the_backend(exporter: PromptWallSpanExporter, tmp_path: Path) -> None:
    """A plain call through the same fixture is stored: the property above is not vacuous."""
    before = exporter.stats_snapshot()["exported"]
    exporter.export(make_spans([({"gen_ai.usage.input_tokens": 3}, [], False)]))
    assert exporter.force_flush(10_000)
    assert exporter.stats_snapshot()["exported"] == before + 1
