"""A small agent app for end-to-end tests, run in its own process.

    python tests/apps/agent_app.py RUNS
    opentelemetry-instrument python tests/apps/agent_app.py RUNS zero

An agent loop written the way frameworks built on opentelemetry-util-genai
write theirs: ``invoke_agent`` and ``execute_tool`` spans from util-genai's
``TelemetryHandler`` (which starts them bare and names them only at the end),
the model calls through the real openai client instrumented by every OpenAI
instrumentation installed (official, OpenInference, OpenLLMetry: each call is
seen three times), against the fake LLM. RUNS agent runs, each: a chat that
asks for a tool, the tool, a chat that answers; then one chat outside any
run. PromptWall is configured from the environment
(``PROMPTWALL_GROUP_AGENT_RUNS`` decides the mode; ``AGENT_APP_SAMPLE_RATIO``
wraps a trace-id ratio sampler in ``GenAIRecordingSampler``). Prints one JSON line: the
client's view of each call (ids and usage). ``zero`` sets nothing up:
opentelemetry-instrument does (``OTEL_TRACES_EXPORTER=promptwall``).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")

import openai  # noqa: E402
from opentelemetry import baggage, context, trace  # noqa: E402

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip


def main(runs: int, zero: bool = False) -> None:
    from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceInstrumentor
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetryInstrumentor
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
    from opentelemetry.util.genai.handler import TelemetryHandler

    import promptwall_otel

    if zero:
        provider = trace.get_tracer_provider()
    else:
        ratio = os.environ.get("AGENT_APP_SAMPLE_RATIO")  # e.g. 0: nothing sampled, every GenAI span only recorded
        sampler = promptwall_otel.GenAIRecordingSampler(TraceIdRatioBased(float(ratio))) if ratio else None
        provider = TracerProvider(resource=Resource.create({"service.name": "agent-app", "service.version": "1.0"}),
                                  sampler=sampler)  # fmt: skip
        trace.set_tracer_provider(provider)
        promptwall_otel.configure(schedule_delay_millis=200)
        for instrumentor in (OpenAIInstrumentor(), OpenInferenceInstrumentor(), OpenLLMetryInstrumentor()):
            instrumentor.instrument()
    handler = TelemetryHandler(tracer_provider=provider)
    client = openai.OpenAI(max_retries=0)
    seen = []
    bag = baggage.set_baggage("promptwall.metadata.run_marker", os.environ["RUN_MARKER"])
    token = context.attach(baggage.set_baggage("session.id", "chat-42", baggage.set_baggage("user.id", "u-7", bag)))
    for index in range(runs):
        with handler.invoke_local_agent("openai", request_model="gpt-4o-mini") as agent:
            agent.agent_name = "weather agent"
            agent.conversation_id = f"conv-{index}"  # a framework's per-run id: the app's session beats it
            question = f"What is the weather in Paris? (run {index})"
            messages = [{"role": "user", "content": question}]
            first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
            call = first.choices[0].message.tool_calls[0]
            with handler.tool("get_weather", arguments=call.function.arguments, tool_call_id=call.id) as tool:
                result = "Sunny, 22C"
                tool.tool_result = result  # type: ignore[attr-defined]
            messages += [first.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": result}]  # fmt: skip
            second = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        for response in (first, second):
            seen.append({"id": response.id, "prompt_tokens": response.usage.prompt_tokens,
                         "completion_tokens": response.usage.completion_tokens, "run": index})  # fmt: skip
    alone = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi alone"}])
    seen.append({"id": alone.id, "prompt_tokens": alone.usage.prompt_tokens,
                 "completion_tokens": alone.usage.completion_tokens, "run": None})  # fmt: skip
    context.detach(token)
    provider.shutdown()
    print(json.dumps(seen))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:] == ["zero"])
