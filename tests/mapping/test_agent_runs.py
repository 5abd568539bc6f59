"""Agent runs as one multi-step event (``group_agent_runs``): billing identical in both modes, the bounds.

Live: a real agent app (util-genai agent and tool spans, the openai client under
three instrumentations, the fake LLM) runs once per mode, each mode to its own
App of one real backend, and the backend's billing must agree to the token.
The bounds and rules are then pinned with real SDK spans through the real
processor to the same backend, and with the pure pieces directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import httpx
import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from promptwall_otel import PromptWallSpanProcessor
from promptwall_otel._stores import ContextStore
from promptwall_otel.backend import LocalBackend
from promptwall_otel.mapping import MappingOptions, from_readable_span
from promptwall_otel.mapping.ledger import TraceLedger
from promptwall_otel.mapping.runs import RunAssembler, run_event, starts_run, step_kind
from promptwall_otel.mapping import classify
from promptwall_otel.record import validate_event

ROOT = Path(__file__).resolve().parents[2]
PER_RUN = "pw_runs_grouped"
PER_CALL = "pw_runs_calls"
SAMPLED_OUT = "pw_runs_sampled_out"
ZERO_CODE = "pw_runs_zero_code"


@pytest.fixture(scope="module")
def two_apps() -> Iterator[LocalBackend]:
    """One real backend with two Apps: one per mode, so each App's billing is one mode's."""
    with LocalBackend(api_keys=[PER_RUN, PER_CALL, SAMPLED_OUT, ZERO_CODE]) as running:
        yield running


def events(backend: LocalBackend, key: str, **params: Any) -> List[Dict[str, Any]]:
    response = httpx.get(backend.url + "/api/console/requests", params={"limit": 1000, **params},
                         headers={"X-API-Key": key})  # fmt: skip
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["requests"]))


def billing(backend: LocalBackend, key: str) -> Dict[str, Any]:
    return httpx.get(backend.url + "/api/console/billing", headers={"X-API-Key": key}).json()


def run_agent_app(backend: LocalBackend, llm: str, key: str, group: bool, tmp_path: Path, zero: bool = False,
                  **extra: str) -> List[Dict[str, Any]]:  # fmt: skip
    env = dict(os.environ, **extra, PYTHONPATH=str(ROOT), PROMPTWALL_API_KEY=key, PROMPTWALL_BASE_URL=backend.url,
               PROMPTWALL_SPOOL_DIR=str(tmp_path / key), OPENAI_BASE_URL=llm + "/v1", OPENAI_API_KEY="sk-fake",
               OTEL_METRICS_EXPORTER="none", PROMPTWALL_GROUP_AGENT_RUNS=str(group).lower(),
               RUN_MARKER=uuid.uuid4().hex)  # fmt: skip
    command = [sys.executable, str(ROOT / "tests" / "apps" / "agent_app.py"), "2"]
    if zero:
        command = [str(Path(sys.executable).parent / "opentelemetry-instrument"), *command, "zero"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_real_agent_app_is_billed_identically_in_both_modes(two_apps: LocalBackend, fake_llm: str,
                                                               tmp_path: Path) -> None:  # fmt: skip
    calls_seen = run_agent_app(two_apps, fake_llm, PER_CALL, False, tmp_path)
    runs_seen = run_agent_app(two_apps, fake_llm, PER_RUN, True, tmp_path)
    per_call, per_run = billing(two_apps, PER_CALL), billing(two_apps, PER_RUN)

    # What the provider reported to the client, per mode: the bill must be exactly that, once.
    for seen, bill in ((calls_seen, per_call), (runs_seen, per_run)):
        assert bill["prompt_tokens"] == sum(c["prompt_tokens"] for c in seen)
        assert bill["completion_tokens"] == sum(c["completion_tokens"] for c in seen)
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "credit_usd"):
        assert per_run[name] == per_call[name], name
    assert per_run["llm_cost_usd"] == pytest.approx(per_call["llm_cost_usd"], rel=1e-9)
    assert (per_call["events"], per_run["events"]) == (5, 3), "5 calls; 2 runs and the call outside any run"

    stored = events(two_apps, PER_RUN)
    runs = [e for e in stored if e["request_id"].startswith("run-")]
    (alone,) = [e for e in stored if not e["request_id"].startswith("run-")]
    assert alone["prompt"] == "Hi alone" and "spans" not in alone, "a call outside any run: an ordinary event"
    for index, run in enumerate(sorted(runs, key=lambda e: e["prompt"])):
        assert validate_event(run) == []
        assert run["prompt"] == f"What is the weather in Paris? (run {index})"
        assert run["answer"] == "Tool said: Sunny, 22C"
        assert (run["session_id"], run["end_user_id"]) == ("chat-42", "u-7")
        assert run["metadata"]["gen_ai"]["agent_name"] == "weather agent"
        assert [s["stage_name"].split(":")[0] for s in run["spans"]] == ["llm", "tool", "llm"]
        assert run["spans"][1]["stage_name"] == "tool:get_weather"
        starts = [s["started_at"] for s in run["spans"]]
        assert starts == sorted(starts), "steps in the order they started"
        mine = [c for c in runs_seen if c["run"] == index]
        assert [s["total_tokens"] for s in run["spans"] if "total_tokens" in s] == \
            [c["prompt_tokens"] + c["completion_tokens"] for c in mine]  # fmt: skip
        assert run["total_tokens"] == sum(s.get("total_tokens", 0) for s in run["spans"])
        assert run["cost_usd"] == pytest.approx(sum(s.get("cost_usd", 0) for s in run["spans"]), rel=1e-9)
        # Each call was seen by three instrumentations: one stage, its other spans listed in it.
        assert all(len(s["metadata"]["duplicate_spans"]) == 2 for s in run["spans"] if s["stage_name"].startswith("llm"))

    # The console shows a run's steps as its timeline.
    login = httpx.post(two_apps.url + "/login", data={"key": PER_RUN, "next": "/traces"})
    assert login.status_code == 303
    session = login.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    page = httpx.get(f"{two_apps.url}/traces/{runs[0]['request_id']}", cookies={"pw_console": session})
    assert page.status_code == 200 and 'id="timeline"' in page.text
    assert page.text.count("llm:gpt-4o-mini") == 2 and "tool:get_weather" in page.text


def two_runs_and_a_call_billed_as_seen(backend: LocalBackend, key: str, seen: List[Dict[str, Any]]) -> None:
    """The agent app's two runs (llm, tool, llm) and its call outside them, billed as the provider reported."""
    bill = billing(backend, key)
    assert bill["prompt_tokens"] == sum(c["prompt_tokens"] for c in seen)
    assert bill["completion_tokens"] == sum(c["completion_tokens"] for c in seen)
    stored = events(backend, key)
    runs = [e for e in stored if e["request_id"].startswith("run-")]
    assert len(stored) == 3 and len(runs) == 2
    assert all([s["stage_name"].split(":")[0] for s in run["spans"]] == ["llm", "tool", "llm"] for run in runs)


def test_runs_are_grouped_and_billed_when_no_trace_is_sampled(two_apps: LocalBackend, fake_llm: str,
                                                               tmp_path: Path) -> None:  # fmt: skip
    """A 0 % trace sampler under GenAIRecordingSampler: util-genai's agent and tool spans start bare (a name,
    no attributes), so the sampler must keep them recorded by their names, or the runs fall apart."""
    seen = run_agent_app(two_apps, fake_llm, SAMPLED_OUT, True, tmp_path, AGENT_APP_SAMPLE_RATIO="0")
    two_runs_and_a_call_billed_as_seen(two_apps, SAMPLED_OUT, seen)


def test_zero_code_groups_runs_too(two_apps: LocalBackend, fake_llm: str, tmp_path: Path) -> None:
    """opentelemetry-instrument with OTEL_TRACES_EXPORTER=promptwall and PROMPTWALL_GROUP_AGENT_RUNS=true:
    every installed OpenAI instrumentation on, the same two runs and one call, billed as the provider said."""
    seen = run_agent_app(two_apps, fake_llm, ZERO_CODE, True, tmp_path, zero=True, OTEL_TRACES_EXPORTER="promptwall",
                         OTEL_LOGS_EXPORTER="promptwall", OTEL_BSP_SCHEDULE_DELAY="200")  # fmt: skip
    two_runs_and_a_call_billed_as_seen(two_apps, ZERO_CODE, seen)


# --- real SDK spans through the real processor --------------------------------------------------

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}


def chat(tracer: Any, tokens: tuple = (10, 5), **extra: Any) -> None:
    attributes = {**CHAT, "gen_ai.response.id": f"chatcmpl-{uuid.uuid4().hex}", "gen_ai.usage.input_tokens": tokens[0],
                  "gen_ai.usage.output_tokens": tokens[1], **extra}  # fmt: skip
    with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attributes):
        pass


def agent(tracer: Any, name: str = "helper", **extra: Any) -> Any:
    return tracer.start_as_current_span(f"invoke_agent {name}", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name, **extra})  # fmt: skip


def tool(tracer: Any, name: str) -> Any:
    return tracer.start_as_current_span(f"execute_tool {name}", attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name})  # fmt: skip


def through_processor(backend: LocalBackend, tmp_path: Path, scenario: Callable[[Any], None],
                      **options: Any) -> List[Dict[str, Any]]:  # fmt: skip
    provider = TracerProvider()
    contexts = ContextStore()
    processor = PromptWallSpanProcessor(api_key=PER_RUN, base_url=backend.url, spool_dir=str(tmp_path),
                                        contexts=contexts, group_agent_runs=True, schedule_delay_millis=50,
                                        **options)  # fmt: skip
    provider.add_span_processor(processor)
    marker = uuid.uuid4().hex
    token = context.attach(baggage.set_baggage("promptwall.metadata.case", marker))
    try:
        scenario(provider.get_tracer("test"))
    finally:
        context.detach(token)
    provider.shutdown()
    assert len(contexts) <= 1, "only a span that never ended keeps what it inherited"
    return events(backend, PER_RUN, **{"metadata.case": marker})


def test_nested_runs_and_calls_outside_runs(two_apps: LocalBackend, tmp_path: Path) -> None:
    def scenario(tracer: Any) -> None:
        with tracer.start_as_current_span("request"):  # an ordinary span above everything
            chat(tracer, (1, 1))  # outside any run
            with tracer.start_as_current_span("invoke_workflow triage", attributes={
                    "gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "triage"}):  # fmt: skip
                chat(tracer, (10, 5))
                with agent(tracer, "researcher"):
                    with tracer.start_as_current_span("my own step"):  # not GenAI: still inside the run
                        chat(tracer, (20, 10))
                    with tool(tracer, "search"):
                        pass
                with agent(tracer, "writer"):
                    chat(tracer, (30, 15))

    alone, run = through_processor(two_apps, tmp_path, scenario)
    assert alone["total_tokens"] == 2 and "spans" not in alone
    assert run["request_id"].startswith("run-") and run["metadata"]["gen_ai"]["operation"] == "invoke_workflow"
    assert run["total_tokens"] == 15 + 30 + 45
    names = [s["stage_name"] for s in run["spans"]]
    assert names == ["llm:gpt-4o-mini", "agent:researcher", "llm:gpt-4o-mini", "tool:search", "agent:writer",
                     "llm:gpt-4o-mini"]  # fmt: skip
    assert run["metadata"]["gen_ai"]["run"]["by_kind"] == {"llm": 3, "agent": 2, "tool": 1}


def test_guardrail_checks_are_steps_with_their_decision(two_apps: LocalBackend, tmp_path: Path) -> None:
    def scenario(tracer: Any) -> None:
        with agent(tracer, "guarded"):
            with tracer.start_as_current_span("run_guardrail pii", attributes={
                    "gen_ai.operation.name": "run_guardrail", "gen_ai.guardrail.component.name": "pii",
                    "gen_ai.guardrail.target.type": "input", "gen_ai.guardrail.verdict.type": "deny",
                    "gen_ai.guardrail.action.type": "block"}):  # fmt: skip
                pass
            with tracer.start_as_current_span("guardrails.rail", attributes={"rail.name": "self check output",
                                                                             "rail.stop": False}):  # fmt: skip
                chat(tracer, (10, 5))

    (run,) = through_processor(two_apps, tmp_path, scenario)
    guard, rail, call = run["spans"]
    assert (guard["stage_name"], guard["metadata"]["decision"]) == ("guardrail:pii", "block")
    assert (rail["stage_name"], rail["metadata"]["decision"]) == ("guardrail:self check output", "allow")
    assert call["stage_name"] == "llm:gpt-4o-mini" and run["total_tokens"] == 15, "a guardrail is never billed"


def test_an_agent_carrying_its_calls_sum_is_not_billed_on_top(two_apps: LocalBackend, tmp_path: Path) -> None:
    def scenario(tracer: Any) -> None:
        with agent(tracer, "summing", **{"gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 15}):
            chat(tracer, (10, 5))
            chat(tracer, (20, 10))
        with agent(tracer, "opaque", **{"gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3,
                                        "gen_ai.request.model": "gpt-4o-mini"}):  # fmt: skip
            with tool(tracer, "lookup"):
                pass

    summing, opaque = through_processor(two_apps, tmp_path, scenario)
    assert summing["total_tokens"] == 45, "the calls' usage, not the agent's sum on top of it"
    assert opaque["total_tokens"] == 10, "no call beneath it had usage: the agent's own is the only bill"
    assert [s["stage_name"] for s in opaque["spans"]] == ["tool:lookup"]


def test_spans_past_the_step_cap_are_counted_and_still_billed(two_apps: LocalBackend, tmp_path: Path) -> None:
    def scenario(tracer: Any) -> None:
        with agent(tracer, "busy"):
            for _ in range(5):
                chat(tracer, (10, 5))

    (run,) = through_processor(two_apps, tmp_path, scenario, max_run_steps=2)
    assert len(run["spans"]) == 2
    assert run["metadata"]["gen_ai"]["run"]["steps_omitted"] == 3
    assert run["total_tokens"] == 75


def test_a_run_still_open_at_shutdown_goes_out_as_ordinary_events(two_apps: LocalBackend, tmp_path: Path) -> None:
    def scenario(tracer: Any) -> None:
        span = tracer.start_span("invoke_agent never-ends")  # started bare, as util-genai does
        with trace.use_span(span, end_on_exit=False):
            chat(tracer, (10, 5))
            chat(tracer, (20, 10))

    records = through_processor(two_apps, tmp_path, scenario)
    assert [r["total_tokens"] for r in records] == [15, 30]
    assert not any(r["request_id"].startswith("run-") for r in records)


def test_a_run_whose_span_never_became_genai_still_closes(two_apps: LocalBackend, tmp_path: Path) -> None:
    """Opened bare as util-genai does, ended without the attributes it would have set (a framework that
    failed before): the run is still one event when it ends, not held until the time bound."""

    def scenario(tracer: Any) -> None:
        with tracer.start_as_current_span("invoke_agent"):
            chat(tracer, (10, 5))
            with tool(tracer, "t"):
                pass

    (run,) = through_processor(two_apps, tmp_path, scenario, max_run_seconds=3600)
    assert run["request_id"].startswith("run-") and run["total_tokens"] == 15
    assert [s["stage_name"] for s in run["spans"]] == ["llm:gpt-4o-mini", "tool:t"]


# --- the pure pieces --------------------------------------------------------------------------


def finished(scenario: Callable[[Any], None]) -> List[Any]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    scenario(provider.get_tracer("test"))
    return [from_readable_span(s) for s in spans.get_finished_spans()]


def one_run(tracer: Any) -> None:
    with agent(tracer, "slow"):
        chat(tracer, (10, 5))
        with tool(tracer, "t"):
            pass


def members_of(views: List[Any]) -> Callable[[Any], Optional[int]]:
    root = next(v for v in views if v.parent_span_id is None).span_id
    return lambda view: root


def test_a_run_open_too_long_is_released_and_its_late_root_is_not_billed() -> None:
    views = finished(one_run)
    runs = RunAssembler(max_run_seconds=60)
    *members, root = views
    assert runs.add(members, members_of(views), now=0.0) == ([], [])
    assert runs.expire(now=59.0) == [] and len(runs) == 2
    assert runs.expire(now=61.0) == members, "past the time bound: the spans go out as ordinary events"
    late = runs.add([root], members_of(views), now=62.0)
    assert late == ([], []), "its calls were billed alone: the root's usage (their sum) would bill them twice"
    assert runs.released_early == 1


def test_a_root_that_lost_its_membership_still_closes_its_run() -> None:
    """The processor's context store is bounded: a long run's root entry may be evicted. Its members are
    held under its id, so the root closes the run by that id alone (else: an aggregate billed beside them)."""
    views = finished(one_run)
    *members, root = views
    runs = RunAssembler()
    runs.add(members, members_of(views), now=0.0)
    singles, (run,) = runs.add([root], lambda view: None, now=1.0)
    assert singles == [] and run.root is root and run.members == members


def test_a_run_larger_than_the_memory_bound_is_released() -> None:
    views = finished(one_run)
    runs = RunAssembler(max_run_spans=1)
    released = runs.add(views[:-1], members_of(views), now=0.0)
    assert released.singles == views[:-1] and len(runs) == 0


def test_all_held_spans_are_bounded_across_runs() -> None:
    first, second = finished(one_run), finished(one_run)
    runs = RunAssembler(max_held_spans=3)
    runs.add(first[:-1], members_of(first), now=0.0)
    released = runs.add(second[:-1], members_of(second), now=1.0)
    assert released.singles == first[:-1], "the oldest run makes room"
    assert len(runs) == 2


def test_grouping_bills_what_the_ledger_bills_call_by_call() -> None:
    """The same spans, mapped call by call and as a run: the same tokens and cost."""

    def scenario(tracer: Any) -> None:
        with agent(tracer, "a", **{"gen_ai.usage.input_tokens": 99, "gen_ai.usage.output_tokens": 99}):
            chat(tracer, (10, 5), **{"gen_ai.usage.cache_read.input_tokens": 4})
            with tracer.start_as_current_span("chat twin", attributes={**CHAT, "gen_ai.usage.input_tokens": 10,
                                                                        "gen_ai.usage.output_tokens": 5}):  # fmt: skip
                with tracer.start_as_current_span("chat inner", attributes={**CHAT, "gen_ai.usage.input_tokens": 10,
                                                                             "gen_ai.usage.output_tokens": 5}):  # fmt: skip
                    pass

    views = finished(scenario)
    options = MappingOptions(group_agent_runs=True)
    alone = TraceLedger().map_batch(views, options)
    runs = RunAssembler()
    singles, (run,) = runs.add(views, members_of(views), now=0.0)
    assert singles == []
    records = TraceLedger().map_batch(run.views(), options)
    event = run_event(run, None, records, options)
    assert validate_event(event) == []
    assert event["total_tokens"] == sum(r.get("total_tokens", 0) for r in alone) == 30
    assert event["cost_usd"] == pytest.approx(sum(r.get("cost_usd", 0) for r in alone), rel=1e-12)
    assert event["metadata"]["gen_ai"]["usage"] == {"cache_read_tokens": 4}
    assert len(event["spans"]) == 2, "the twin pair is one call, one stage"


def test_what_opens_a_run_and_what_is_a_step() -> None:
    assert starts_run("invoke_agent", {}) and starts_run("invoke_workflow triage", None)
    assert starts_run("agent", {"openinference.span.kind": "AGENT"}) and starts_run("c", {"openinference.span.kind": "CHAIN"})
    assert starts_run("w", {"traceloop.span.kind": "workflow"}) and starts_run("ai.generateText", {"ai.operationId": "ai.generateText"})
    assert not starts_run("chat gpt-4o", {"gen_ai.operation.name": "chat"})
    assert not starts_run("invoke_agents_handler", {}) and not starts_run("invoke_workflowish x", None)
    assert not starts_run("t", {"openinference.span.kind": "TOOL"}) and not starts_run("GET /", {"http.method": "GET"})

    def kind(name: str, attrs: Dict[str, Any]) -> Optional[str]:
        views = finished(lambda tracer: tracer.start_span(name, attributes=attrs).end())
        return step_kind(classify(views[0]))

    assert kind("c", CHAT) == "llm"
    assert kind("e", {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "m"}) == "embedding"
    assert kind("r", {"openinference.span.kind": "RETRIEVER"}) == "retrieval"
    assert kind("g", {"gen_ai.operation.name": "run_guardrail"}) == "guardrail"
    assert kind("p", {"gen_ai.operation.name": "plan"}) == "plan"
    assert kind("m", {"gen_ai.operation.name": "search_memory"}) == "memory"
    assert kind("t", {"ai.operationId": "ai.toolCall"}) == "tool"
    assert kind("x", {"openinference.span.kind": "CHAIN"}) is None, "a nested chain is structure"
    assert kind("y", {"ai.operationId": "ai.generateText"}) is None, "the AI SDK's outer span is structure"


def test_a_call_whose_copy_was_billed_alone_counts_zero_in_its_run() -> None:
    """A provider SDK's own span of the call (another trace, same response id) left first: the run shows
    the call as a step, billed in that record, and does not bill it again."""
    response_id = f"chatcmpl-{uuid.uuid4().hex}"
    copy = finished(lambda tracer: chat(tracer, (10, 5), **{"gen_ai.response.id": response_id}))

    def scenario(tracer: Any) -> None:
        with agent(tracer, "a"):
            chat(tracer, (10, 5), **{"gen_ai.response.id": response_id})
            chat(tracer, (20, 10))

    views = finished(scenario)
    options = MappingOptions(group_agent_runs=True)
    ledger = TraceLedger()
    (sent,) = ledger.map_batch(copy, options)
    _, (run,) = RunAssembler().add(views, members_of(views), now=0.0)
    copies: List[Dict[str, Any]] = []
    event = run_event(run, None, ledger.map_batch(run.views(), options, copies=copies), options, copies)
    assert event["total_tokens"] == 30, "only the call nobody billed yet"
    first, second = event["spans"]
    assert first["metadata"]["billed_in"] == sent["request_id"] and first["total_tokens"] == 15
    assert "billed_in" not in second["metadata"]
    assert event["metadata"]["gen_ai"]["run"]["billed_elsewhere"] == [sent["request_id"]]


def test_a_recorded_openai_agents_sdk_run_is_one_event() -> None:
    """OpenInference's spans of a real OpenAI Agents SDK run (tests/fixtures/captures): an AGENT root over a
    CHAIN, a nested AGENT and CHAIN turns; grouped over the whole trace with run_membership."""
    from promptwall_otel.mapping.runs import run_membership
    from tests.mapping.captures import load

    views, _ = load("openai-agents__openinference__agent_stream_tool")
    views.sort(key=lambda view: view.end_ns)
    membership = run_membership(views)
    root = next(view for view in views if view.parent_span_id is None)
    assert set(membership.values()) == {root.span_id} and len(membership) == len(views), "one run: the outermost"
    singles, (run,) = RunAssembler().add(views, lambda view: membership.get(view.span_id), now=0.0)
    assert singles == [] and run.root is root
    options = MappingOptions(group_agent_runs=True)
    records = TraceLedger().map_batch(run.views(), options)
    event = run_event(run, None, records, options)
    assert validate_event(event) == []
    assert [s["stage_name"] for s in event["spans"]] == ["agent:weather agent", "llm:gpt-4o-mini", "tool:get_weather",
                                                         "llm:gpt-4o-mini"]  # fmt: skip
    assert event["answer"] == records[-1]["answer"] and "Paris" in event["prompt"]
