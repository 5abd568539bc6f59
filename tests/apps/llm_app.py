"""A small LLM app for end-to-end tests, run in its own process.

    python tests/apps/llm_app.py code [--calls N] [--sample-ratio R] [--otlp URL] [--fork]
    opentelemetry-instrument python tests/apps/llm_app.py zero

``code`` sets up OpenTelemetry and PromptWall in code; ``zero`` has no setup
(opentelemetry-instrument does it). Both instrument the client with every
OpenAI instrumentation installed (the official one, OpenInference and
OpenLLMetry: what opentelemetry-instrument enables here), so each call is
seen three times and must still be billed once. The calls: a conversation turn under a span carrying a
session and user (plus baggage metadata), a tool call, an embedding and N
extra chats. Prints one JSON line: the client's view of each call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")

import openai  # noqa: E402
from opentelemetry import baggage, context, trace  # noqa: E402

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip


def setup_code(args: argparse.Namespace) -> object:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    import promptwall_otel

    sampler = promptwall_otel.GenAIRecordingSampler(TraceIdRatioBased(args.sample_ratio))
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-app", "service.version": "2.0"}),
                              sampler=sampler)  # fmt: skip
    trace.set_tracer_provider(provider)
    if args.otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=args.otlp)))
    promptwall_otel.configure(schedule_delay_millis=200)
    # What opentelemetry-instrument does in this environment: every installed OpenAI instrumentation.
    from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceInstrumentor
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetryInstrumentor

    for instrumentor in (OpenAIInstrumentor(), OpenInferenceInstrumentor(), OpenLLMetryInstrumentor()):
        instrumentor.instrument()
    return provider


def calls(client: openai.OpenAI, extra: int) -> list:
    tracer = trace.get_tracer("e2e-app")
    out = []
    token = context.attach(baggage.set_baggage("promptwall.metadata.channel", "e2e"))
    with tracer.start_as_current_span("turn", attributes={"gen_ai.conversation.id": "conv-e2e", "user.id": "u-e2e"}):
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello from the e2e test"}])  # fmt: skip
        out.append({"id": r.id, "answer": r.choices[0].message.content})
    context.detach(token)
    r = client.chat.completions.create(model="gpt-4o-mini", tools=[WEATHER_TOOL],
                                       messages=[{"role": "user", "content": "What is the weather in Paris?"}])  # fmt: skip
    out.append({"id": r.id, "tool": r.choices[0].message.tool_calls[0].function.name})
    e = client.embeddings.create(model="text-embedding-3-small", input="embed these four words")
    out.append({"embedding": len(e.data[0].embedding)})
    for i in range(extra):
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"extra call {i}"}])
        out.append({"id": r.id})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["code", "zero"])
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--sample-ratio", type=float, default=1.0)
    parser.add_argument("--otlp")
    parser.add_argument("--fork", action="store_true")
    args = parser.parse_args()
    provider = setup_code(args) if args.mode == "code" else trace.get_tracer_provider()
    client = openai.OpenAI(max_retries=0)
    if args.fork:
        pid = os.fork()
        if pid == 0:  # the child makes the calls and exits through the SDK's shutdown
            client = openai.OpenAI(max_retries=0)
            print(json.dumps({"pid": os.getpid(), "calls": calls(client, args.calls)}), flush=True)
            provider.shutdown()  # type: ignore[attr-defined]
            os._exit(0)
        os.waitpid(pid, 0)
        provider.shutdown()  # type: ignore[attr-defined]
        return
    print(json.dumps({"pid": os.getpid(), "calls": calls(client, args.calls)}), flush=True)
    if args.mode == "code":
        provider.shutdown()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
