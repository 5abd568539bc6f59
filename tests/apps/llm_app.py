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
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    import promptwall_otel

    sampler = promptwall_otel.GenAIRecordingSampler(TraceIdRatioBased(args.sample_ratio))
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-app", "service.version": "2.0"}),
                              sampler=sampler)  # fmt: skip
    trace.set_tracer_provider(provider)
    promptwall_otel.configure(schedule_delay_millis=200)
    if args.otlp:
        add_otlp(provider, args)
    # What opentelemetry-instrument does in this environment: every installed OpenAI instrumentation.
    from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceInstrumentor
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetryInstrumentor

    for instrumentor in (OpenAIInstrumentor(), OpenInferenceInstrumentor(), OpenLLMetryInstrumentor()):
        instrumentor.instrument()
    return provider


def add_otlp(provider: object, args: argparse.Namespace) -> None:
    """Also send spans (and log records) to ``--otlp`` with a stock OTLP exporter, as to a collector."""
    from opentelemetry._logs import get_logger_provider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    headers = {"X-API-Key": os.environ["PROMPTWALL_API_KEY"]}
    if args.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        grpc_headers = tuple((k.lower(), v) for k, v in headers.items())
        spans, logs = (OTLPSpanExporter(endpoint=args.otlp, insecure=True, headers=grpc_headers),
                       OTLPLogExporter(endpoint=args.otlp, insecure=True, headers=grpc_headers))  # fmt: skip
    elif args.otlp_protocol == "json":
        spans, logs = json_exporters(args.otlp, headers)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        spans = OTLPSpanExporter(endpoint=args.otlp + "/v1/traces", headers=headers)
        logs = OTLPLogExporter(endpoint=args.otlp + "/v1/logs", headers=headers)
    provider.add_span_processor(BatchSpanProcessor(spans, schedule_delay_millis=200))  # type: ignore[attr-defined]
    if args.otlp_logs:
        get_logger_provider().add_log_record_processor(BatchLogRecordProcessor(logs, schedule_delay_millis=200))  # type: ignore[attr-defined]


def json_exporters(url: str, headers: dict) -> tuple:
    """OTLP/JSON over HTTP with the stock JSON encoder: what opentelemetry-exporter-otlp-json-http posts."""
    import httpx
    from opentelemetry.exporter.otlp.json.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    def post(path: str, payload: bytes) -> bool:
        response = httpx.post(url + path, content=payload, headers={**headers, "Content-Type": "application/json"})
        return response.status_code == 200

    class Spans(SpanExporter):
        def export(self, batch):  # type: ignore[no-untyped-def]
            ok = post("/v1/traces", encode_spans(batch).to_json().encode())
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    class Logs(LogRecordExporter):
        def export(self, batch):  # type: ignore[no-untyped-def]
            ok = post("/v1/logs", encode_logs(batch).to_json().encode())
            return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return Spans(), Logs()


def calls(client: openai.OpenAI, extra: int, use_baggage: bool = True) -> list:
    tracer = trace.get_tracer("e2e-app")
    out = []
    token = context.attach(baggage.set_baggage("promptwall.metadata.channel", "e2e") if use_baggage else context.get_current())
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
    parser.add_argument("--otlp", help="also export to this OTLP endpoint (base URL, or host:port for grpc)")
    parser.add_argument("--otlp-protocol", choices=["http", "grpc", "json"], default="http")
    parser.add_argument("--otlp-logs", action="store_true", help="send log records there too")
    parser.add_argument("--fork", action="store_true")
    parser.add_argument("--no-baggage", action="store_true", help="baggage never leaves the process: skip it")
    args = parser.parse_args()
    provider = setup_code(args) if args.mode == "code" else trace.get_tracer_provider()
    client = openai.OpenAI(max_retries=0)
    if args.fork:
        pid = os.fork()
        if pid == 0:  # the child makes the calls and exits through the SDK's shutdown
            client = openai.OpenAI(max_retries=0)
            print(json.dumps({"pid": os.getpid(), "calls": calls(client, args.calls, not args.no_baggage)}), flush=True)
            provider.shutdown()  # type: ignore[attr-defined]
            os._exit(0)
        os.waitpid(pid, 0)
        provider.shutdown()  # type: ignore[attr-defined]
        return
    print(json.dumps({"pid": os.getpid(), "calls": calls(client, args.calls, not args.no_baggage)}), flush=True)
    if args.mode == "code":
        provider.shutdown()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
