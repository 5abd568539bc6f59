"""What a run becomes for Promptetheus: real SDK spans through the exporter's one mapping, both targets' lines.

No network here: ``encode_spans`` is the pure part of the pipeline (the
workers are never offered anything), so each rule is pinned on exactly what
would be sent.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Dict, List

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from promptwall_otel import PromptWallSpanExporter
from promptwall_otel._stores import ContextStore
from promptwall_otel.mapping.runs import starts_run
from promptwall_otel.mapping.builder import Inherited

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}


def encoded(scenario: Callable[[Any], None], resource: Dict[str, Any] = {}, **options: Any) -> Dict[str, List[Dict[str, Any]]]:
    """Run ``scenario`` on a real tracer; each target's decoded lines for its spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", **resource}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    scenario(provider.get_tracer("test"))
    contexts = ContextStore()
    spans = list(memory.get_finished_spans())
    by_id = {s.context.span_id: s for s in spans}
    for span in spans:  # what the processor records at span start: the outermost run a span is in
        run, node = None, span
        while node is not None:
            if starts_run(node.name, node.attributes):
                run = node.context.span_id
            node = by_id.get(node.parent.span_id) if node.parent else None
        if run is not None:
            contexts.put(span.context.span_id, Inherited(run_span_id=run))
    exporter = PromptWallSpanExporter(api_key="k", base_url="http://127.0.0.1:9", spool=False, contexts=contexts,
                                      targets=["promptwall", "promptetheus"], **options)  # fmt: skip
    try:
        lines = exporter.encode_spans(spans)
    finally:
        exporter.shutdown(0.5)
    return {outlet.name: [json.loads(line) for line in out] for outlet, out in zip(exporter.outlets, lines)}


def chat(tracer: Any, tokens: tuple = (10, 5), error: bool = False, **extra: Any) -> None:
    attributes = {**CHAT, "gen_ai.response.id": f"chatcmpl-{uuid.uuid4().hex}", "gen_ai.usage.input_tokens": tokens[0],
                  "gen_ai.usage.output_tokens": tokens[1], **extra}  # fmt: skip
    with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attributes) as span:
        if error:
            span.set_attribute("error.type", "RateLimitError")
            span.set_status(Status(StatusCode.ERROR))


def test_a_run_is_one_trace_with_its_steps_in_start_order() -> None:
    def scenario(tracer: Any) -> None:
        with tracer.start_as_current_span("invoke_agent planner", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
                "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"Plan a trip"}]}]'}) as root:
            chat(tracer, (10, 5))
            with tracer.start_as_current_span("execute_tool search", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}):
                pass
            with tracer.start_as_current_span("evaluate", attributes={"gen_ai.operation.name": "evaluation"}):
                pass
            chat(tracer, (20, 7), error=True)
            root.set_attribute("error.type", "RateLimitError")  # the failed call ended the run
            root.set_status(Status(StatusCode.ERROR))

    out = encoded(scenario, {"promptetheus.project_id": "proj_from_resource"})
    (run,) = out["promptetheus"]
    # PromptWall's grouping is off: it gets the two calls one by one, while Promptetheus gets the run.
    assert sorted(r["prompt_tokens"] for r in out["promptwall"]) == [10, 20]
    assert run["trace"]["id"].startswith("run-") and run["trace"]["agent"] == "planner"
    assert run["trace"]["project_id"] == "proj_from_resource" and run["trace"]["user_goal"] == "Plan a trip"
    events = run["events"]
    assert [e["type"] for e in events] == ["user_message", "llm_call", "tool_call", "goal_check", "llm_call", "error"]
    assert [e["seq"] for e in events] == list(range(6))
    assert len({e["idempotency_key"] for e in events}) == 6
    assert all(e["idempotency_key"].startswith(run["trace"]["id"] + ":") for e in events)
    calls = [e["payload"] for e in events if e["type"] == "llm_call"]
    assert [(c["input_tokens"], c["output_tokens"]) for c in calls] == [(10, 5), (20, 7)]
    assert calls[1]["status"] == "error" and calls[1]["error_code"] == "RateLimitError"
    assert events[-1]["payload"]["error_code"] == "RateLimitError"


def test_calls_outside_runs_are_one_step_traces_named_like_their_records() -> None:
    out = encoded(lambda tracer: (chat(tracer), chat(tracer, (3, 1))))
    assert len(out["promptwall"]) == len(out["promptetheus"]) == 2
    for record, run in zip(out["promptwall"], out["promptetheus"]):
        assert run["trace"]["id"] == record["request_id"] and run["trace"]["agent"] == "svc"
        assert [e["type"] for e in run["events"]] == ["user_message", "llm_call"]
        assert run["events"][1]["payload"]["prompt_ref"] == record["request_id"]
        assert run["events"][1]["payload"]["input_tokens"] == record["prompt_tokens"]


def test_content_off_sends_references_not_content() -> None:
    def scenario(tracer: Any) -> None:
        chat(tracer, **{"gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"secret"}]}]',
                        "gen_ai.output.messages": '[{"role":"assistant","parts":[{"type":"text","content":"x"}]}]'})

    out = encoded(scenario, capture_content=False)
    (run,) = out["promptetheus"]
    assert "secret" not in json.dumps(run) and "user_goal" not in run["trace"]
    assert run["events"][0]["payload"] == {"content": None, "content_ref": run["trace"]["id"]}
    assert "completion" not in run["events"][1]["payload"]


def test_the_configured_project_wins_over_the_resource() -> None:
    out = encoded(lambda tracer: chat(tracer), {"promptetheus.project_id": "from_resource"},
                  promptetheus_project_id="configured")  # fmt: skip
    assert out["promptetheus"][0]["trace"]["project_id"] == "configured"
    assert "project_id" not in encoded(lambda tracer: chat(tracer))["promptetheus"][0]["trace"]


def test_evaluations_are_goal_checks_and_a_blocking_guardrail_is_a_guardrail_check() -> None:
    def scenario(tracer: Any) -> None:
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                **CHAT, "gen_ai.usage.input_tokens": 4, "gen_ai.usage.output_tokens": 2}) as span:
            span.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "relevance",
                                                        "gen_ai.evaluation.score.value": 0.9,
                                                        "gen_ai.evaluation.score.label": "pass"})  # fmt: skip
            span.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "groundedness",
                                                        "gen_ai.evaluation.score.label": "fail",
                                                        "gen_ai.evaluation.explanation": "cites no source"})  # fmt: skip
        with tracer.start_as_current_span("run_guardrail input", attributes={
                "gen_ai.operation.name": "run_guardrail", "gen_ai.guardrail.verdict.type": "deny",
                "gen_ai.guardrail.action.type": "block"}):
            pass

    out = encoded(scenario)
    runs = {tuple(e["type"] for e in run["events"]): run for run in out["promptetheus"]}
    call = runs[("user_message", "llm_call", "goal_check", "goal_check")]
    checks = [e["payload"] for e in call["events"][2:]]
    assert [(c["name"], c["passed"]) for c in checks] == [("relevance", True), ("groundedness", False)]
    assert checks[0]["score"] == 0.9 and checks[1]["mismatches"] == ["cites no source"]
    guard = runs[("user_message", "guardrail_check")]
    assert guard["events"][1]["payload"]["status"] == "blocked"
    assert all(e["payload"].get("input_tokens", 0) == 0 for e in guard["events"])


def test_a_late_evaluation_is_appended_to_its_calls_trace() -> None:
    from promptwall_otel import promptetheus
    from promptwall_otel.mapping import MappingOptions
    from promptwall_otel.mapping.builder import evaluation_record
    from promptwall_otel.mapping.view import LogView

    log = LogView(body=None, attributes={"gen_ai.evaluation.name": "toxicity", "gen_ai.evaluation.score.label": "fail",
                                         "gen_ai.evaluation.explanation": "insult"}, trace_id=1, span_id=2,
                  time_ns=1_700_000_000_000_000_000, event_name="gen_ai.evaluation.result")  # fmt: skip
    record = evaluation_record(("otel-call-1", "s1", None, "otel:svc"), [log], MappingOptions())
    run = promptetheus.run_of(record)
    assert run["trace"]["id"] == "otel-call-1"  # created already: 409, then the check is appended
    (check,) = run["events"]
    assert check["type"] == "goal_check" and check["seq"] == promptetheus.LATE_SEQ and check["session_id"] == "s1"
    assert check["payload"]["passed"] is False and check["payload"]["mismatches"] == ["insult"]
    assert promptetheus.run_of(record) == run, "deterministic: a replay is the same run"


def test_tool_arguments_and_results_travel_under_the_content_controls() -> None:
    def scenario(tracer: Any) -> None:
        with tracer.start_as_current_span("invoke_agent a", attributes={"gen_ai.operation.name": "invoke_agent"}):
            chat(tracer)
            with tracer.start_as_current_span("execute_tool get_weather", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
                    "gen_ai.tool.call.arguments": '{"city": "Paris"}', "gen_ai.tool.call.result": "Sunny, 22C"}):
                pass

    (tool,) = [e["payload"] for e in encoded(scenario)["promptetheus"][0]["events"] if e["type"] == "tool_call"]
    assert (tool["arguments"], tool["result"]) == ('{"city": "Paris"}', "Sunny, 22C")
    (hidden,) = [e["payload"] for e in encoded(scenario, capture_content=False)["promptetheus"][0]["events"]
                 if e["type"] == "tool_call"]  # fmt: skip
    assert "arguments" not in hidden and "result" not in hidden and hidden["name"] == "tool:get_weather"
