"""Issue 11, item 3: a framework's LLM span and the client instrumentation's span of one call, in two traces.

The framework span is never made current, so the client's span starts a trace
of its own. Built from what the producers emit: runs of LangChain (OpenInference
and OpenLLMetry LangChain instrumentations), LlamaIndex and the OpenAI Agents
SDK beside the OpenInference or OpenLLMetry OpenAI instrumentation, recorded
against examples/fake_llm by tests/fixtures/captures/capture_frameworks.py; and
a live LangChain app through the exporter to the real backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from promptwall_otel.backend import LocalBackend
from promptwall_otel.mapping import MappingOptions, SpanView
from promptwall_otel.mapping.ledger import TraceLedger
from promptwall_otel.mapping.openinference import response_id
from promptwall_otel.record import validate_event
from tests.conftest import API_KEY, ROOT, app_env, stored_events
from tests.mapping.captures import load

PAIRS = ["openinference+openinference", "openinference+openllmetry", "openllmetry+openinference",
         "openllmetry+openllmetry"]  # fmt: skip
CALLS = {"chat": 1, "chat_stream": 1, "error_400": 1, "four_calls": 4}


def mapped(name: str) -> List[Dict[str, Any]]:
    views, _ = load(name)
    records = TraceLedger().map_batch(views, MappingOptions())
    assert all(validate_event(record) == [] for record in records)
    return records


def client_tokens(views: List[SpanView]) -> int:
    """What the client instrumentation's spans say the calls used (the bill, once); OpenLLMetry's
    LangChain instrumentation suppresses its OpenAI one, so there its own spans are the only ones."""
    clients = [view for view in views if "langchain" not in view.scope_name] or views
    total = 0
    for view in clients:
        attrs = view.attributes
        total += attrs.get("llm.token_count.total") or (
            attrs.get("gen_ai.usage.input_tokens", 0) + attrs.get("gen_ai.usage.output_tokens", 0))
    return total


@pytest.mark.parametrize("scenario", sorted(CALLS))
@pytest.mark.parametrize("pair", PAIRS)
def test_langchain_calls_are_one_event_each(pair: str, scenario: str) -> None:
    name = f"langchain__{pair}__{scenario}"
    views, _ = load(name)
    records = mapped(name)
    assert len(records) == CALLS[scenario], [r["metadata"]["otel"]["span_name"] for r in records]
    assert sum(r.get("total_tokens", 0) for r in records) == client_tokens(views)
    if scenario == "four_calls":
        assert sorted(r["prompt"] for r in records) == [f"Question {n}" for n in range(4)]
        assert all(r["total_tokens"] == 5 for r in records)
    if scenario == "error_400":
        (record,) = records
        assert record["status"] == "error" and "total_tokens" not in record
    if len(views) > len(records):  # two spans per call: the record names the folded one
        assert all(len(r["metadata"]["otel"]["duplicate_spans"]) == 1 for r in records)


def test_langchain_result_nests_the_provider_id() -> None:
    """OpenInference's LangChain span: LLMResult in output.value, the id in llm_output and the message."""
    views, _ = load("langchain__openinference+openinference__chat")
    framework = next(v for v in views if v.scope_name.endswith("langchain"))
    client = next(v for v in views if not v.scope_name.endswith("langchain"))
    assert framework.trace_id != client.trace_id, "the recording shows two traces"
    assert response_id(framework.attributes) == response_id(client.attributes) == "chatcmpl-a85060bd204123cfb4e04095"


def langchain_output(**generation: Any) -> Dict[str, Any]:
    return {"output.value": json.dumps({"generations": [[{"text": "Hi", "type": "ChatGeneration", **generation}]],
                                        "llm_output": None, "run": None, "type": "LLMResult"}),
            "output.mime_type": "application/json"}  # fmt: skip


@pytest.mark.parametrize("attrs", [
    # langchain_core.load.dumpd of an AIMessage (what OpenInference's LangChain tracer serialises)
    langchain_output(message={"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "AIMessage"],
                              "kwargs": {"content": "Hi", "response_metadata": {"id": "chatcmpl-in-the-message-01"}}}),
    # a plain message dict, and a provider that reports its id in generation_info
    langchain_output(message={"content": "Hi", "response_metadata": {"id": "chatcmpl-in-the-message-01"}}),
    langchain_output(generation_info={"id": "chatcmpl-in-the-message-01", "finish_reason": "stop"}),
], ids=["dumpd-message", "plain-message", "generation-info"])  # fmt: skip
def test_provider_id_in_a_generation(attrs: Dict[str, Any]) -> None:
    assert response_id(attrs) == "chatcmpl-in-the-message-01"


def test_agents_sdk_generation_is_keyed_by_the_completion_it_came_from() -> None:
    """The Agents SDK's Responses object carries a placeholder id; each output item's provider_data
    names the chat completion, which the client instrumentation's span keys the call by."""
    views, _ = load("openai-agents__openinference+openinference__agent_stream_tool")
    generations = [v for v in views if v.name == "generation"]
    clients = [v for v in views if v.name == "ChatCompletion"]
    alone = [TraceLedger().map_batch([view], MappingOptions())[0] for view in generations + clients]
    assert [r["request_id"] for r in alone[:2]] == [r["request_id"] for r in alone[2:]]
    assert all(r["request_id"].startswith("gen-") for r in alone)
    assert alone[0]["metadata"]["gen_ai"]["response_id"].startswith("chatcmpl-")


def test_llama_index_streamed_span_ends_before_its_call() -> None:
    """LlamaIndex closes its stream_chat span when the generator is handed back, before the request is
    sent: nothing safe ties it to the client's span (no id, no enclosing interval), so the call stays
    two records; neither is billed twice (the framework span has no usage)."""
    views, _ = load("llama-index__openinference+openinference__chat_stream")
    framework = next(v for v in views if v.scope_name.endswith("llama_index"))
    client = next(v for v in views if not v.scope_name.endswith("llama_index"))
    assert framework.end_ns < client.start_ns
    records = mapped("llama-index__openinference+openinference__chat_stream")
    assert len(records) == 2 and not any(r.get("total_tokens") for r in records)
    assert len(mapped("llama-index__openinference+openinference__chat")) == 1  # same trace: the twin rule


def shifted(view: SpanView, trace_id: int, span_id: int, offset_ns: int, prompt: str = "") -> SpanView:
    attrs = dict(view.attributes)
    if "output.value" in attrs:  # another call: another provider id
        attrs["output.value"] = attrs["output.value"].replace("chatcmpl-", "chatcmpl-other-")
    if prompt:
        attrs["llm.input_messages.0.message.content"] = prompt
    return SpanView(view.name, trace_id, span_id, view.start_ns + offset_ns, view.end_ns + offset_ns, attrs,
                    kind=view.kind, status_code=view.status_code, resource=view.resource,
                    scope_name=view.scope_name)  # fmt: skip


def test_overlapping_calls_to_one_model_are_never_paired_by_time() -> None:
    """Two streamed calls whose spans overlap so that a client span sits inside both framework spans:
    ambiguous, so four records (never a wrong merge)."""
    views, _ = load("langchain__openinference+openinference__chat_stream")
    framework = next(v for v in views if v.scope_name.endswith("langchain"))
    client = next(v for v in views if not v.scope_name.endswith("langchain"))
    other = [shifted(framework, 0xA1, 0xA2, 1_000), shifted(client, 0xA3, 0xA4, 1_000)]
    records = TraceLedger().map_batch([client, framework] + other, MappingOptions())
    assert len(records) == 4


def test_different_prompts_are_never_one_call() -> None:
    views, _ = load("langchain__openinference+openinference__error_400")
    framework = next(v for v in views if v.scope_name.endswith("langchain"))
    client = next(v for v in views if not v.scope_name.endswith("langchain"))
    records = TraceLedger().map_batch([shifted(client, client.trace_id, client.span_id, 0, "Another question"),
                                       framework], MappingOptions())  # fmt: skip
    assert len(records) == 2


def test_live_langchain_app_bills_each_call_once(backend: LocalBackend, fake_llm: str, tmp_path: Path) -> None:
    """Real LangChain and real instrumentations, through the exporter to the real backend."""
    import subprocess
    import sys

    from tests.conftest import API_KEY as key

    env = app_env(backend.url, fake_llm, str(tmp_path), OTEL_SERVICE_NAME="framework-app")
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "apps" / "framework_app.py")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = json.loads(done.stdout)["calls"]
    records = [r for r in stored_events(backend.url, key) if r.get("integration_id", "").startswith("otel:framework-app")]
    assert sorted(r["prompt"] for r in records) == sorted(call["prompt"] for call in calls)
    assert sum(r.get("total_tokens", 0) for r in records) == sum(c["usage"]["total_tokens"] for c in calls if "usage" in c)
    assert [r["status"] for r in records if r["prompt"] == "Fail"] == ["error"]
    assert all(len(r["metadata"]["otel"]["duplicate_spans"]) == 1 for r in records)
    assert API_KEY not in done.stdout + done.stderr
