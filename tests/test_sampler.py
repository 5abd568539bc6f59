"""Sampling must not lose bills: with a 0% sampler every LLM call still reaches PromptWall,
and a stock OTLP exporter beside it receives none of them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, TraceIdRatioBased

from promptwall_otel import GenAIRecordingSampler
from promptwall_otel.backend import LocalBackend
from promptwall_otel.sampler import parentbased_traceidratio
from tests.conftest import API_KEY, app_env, run_app, stored_events
from tests.otlp_sink import OtlpSink


@pytest.fixture()
def sink() -> Iterator[OtlpSink]:
    running = OtlpSink()
    yield running
    running.stop()


@pytest.fixture()
def backend() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[API_KEY]) as running:
        yield running


def test_zero_ratio_code_path(backend: LocalBackend, sink: OtlpSink, fake_llm: str, tmp_path: Path) -> None:
    done = run_app("code", app_env(backend.url, fake_llm, str(tmp_path)), "--sample-ratio", "0", "--otlp", sink.url.rsplit("/v1/traces", 1)[0],
                   "--calls", "5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = stored_events(backend.url)
    assert len(records) == 3 + 5
    assert records[0]["session_id"] == "conv-e2e", "ids of unsampled parents are still inherited"
    assert sink.span_names == []


def test_full_ratio_control_reaches_the_stock_exporter(backend: LocalBackend, sink: OtlpSink, fake_llm: str,
                                                       tmp_path: Path) -> None:  # fmt: skip
    done = run_app("code", app_env(backend.url, fake_llm, str(tmp_path)), "--sample-ratio", "1", "--otlp", sink.url.rsplit("/v1/traces", 1)[0])
    assert done.returncode == 0, done.stderr
    assert len(stored_events(backend.url)) == 3
    assert "turn" in sink.span_names and len(sink.span_names) >= 4


def test_zero_ratio_zero_code(backend: LocalBackend, sink: OtlpSink, fake_llm: str, tmp_path: Path) -> None:
    env = app_env(backend.url, fake_llm, str(tmp_path),
                  OTEL_TRACES_EXPORTER="promptwall,otlp", OTEL_LOGS_EXPORTER="promptwall",
                  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=sink.url,
                  OTEL_TRACES_SAMPLER="promptwall_parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0")  # fmt: skip
    done = run_app("zero", env, "--calls", "5")
    assert done.returncode == 0, done.stderr
    assert len(stored_events(backend.url)) == 3 + 5
    assert sink.span_names == []


def test_sampler_keeps_genai_spans_recorded_but_unsampled() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=GenAIRecordingSampler(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(memory))  # stock processors export sampled spans only
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}) as span:
        assert span.is_recording() and not span.get_span_context().trace_flags.sampled
    with tracer.start_as_current_span("GET /health") as span:
        assert not span.is_recording()
    # opentelemetry-util-genai starts its spans bare, named by the conventions, and sets attributes at the end.
    for name in ("chat gpt-4o-mini", "embeddings text-embedding-3-small", "invoke_agent", "invoke_workflow triage",
                 "execute_tool get_weather"):  # fmt: skip
        with tracer.start_as_current_span(name) as span:
            assert span.is_recording(), name
    for name in ("chatbot handler", "chatroom", "GET /chat"):
        with tracer.start_as_current_span(name) as span:
            assert not span.is_recording(), name
    assert memory.get_finished_spans() == ()
    assert "GenAIRecordingSampler" in GenAIRecordingSampler(TraceIdRatioBased(0.5)).get_description()


@pytest.mark.parametrize("argument, ratio", [("0", 0.0), ("0.25", 0.25), ("", 1.0), ("junk", 1.0), ("7", 1.0)])
def test_sampler_entry_point_argument(argument: str, ratio: float) -> None:
    assert f"{ratio}" in parentbased_traceidratio(argument).get_description()
