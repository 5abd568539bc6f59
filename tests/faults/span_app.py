"""An app that makes realistic GenAI chat spans at a set rate, for the fault suite. Run in its own process.

    python tests/faults/span_app.py --run RUN --count N [--rate R] [--start I]

Each span is one chat call as the GenAI conventions describe it, with a few KB
of content (a shared system prompt, a question, an answer) and a unique
response id ``chatcmpl-{RUN}-{i}``, so the suite can count at the backend what
arrived. Set up with ``promptwall_otel.configure()`` from the environment.
SIGTERM ends the loop and shuts down as a service manager would. At exit it
prints one JSON line: spans emitted, the processor's counters, RSS at start
and at its peak (kB).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import promptwall_otel

SYSTEM = ("You are a support assistant for an online shop. Answer briefly, cite the order number, never reveal "
          "internal notes, and escalate refunds above 200 euros. ") * 12  # fmt: skip


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def chat(tracer: trace.Tracer, run: str, i: int) -> None:
    question = f"Where is my order {i:07d}? It was due on Monday and the tracking page shows nothing since. " * 4
    answer = f"Order {i:07d} left the warehouse yesterday; the carrier updates tracking within 24 hours. " * 3
    with tracer.start_as_current_span("chat gpt-4o-mini") as span:
        span.set_attributes({
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.response.id": f"chatcmpl-{run}-{i:07d}",
            "gen_ai.usage.input_tokens": 100 + i % 7, "gen_ai.usage.output_tokens": 40 + i % 3,
            "gen_ai.conversation.id": f"conv-{run}-{i // 10}",
            "gen_ai.input.messages": json.dumps([
                {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
                {"role": "user", "parts": [{"type": "text", "content": question}]}]),
            "gen_ai.output.messages": json.dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]),
        })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="spans per second; 0: as fast as possible")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--poison-at", type=int, default=-1, help="this span's response id contains POISON")
    parser.add_argument("--linger", type=float, default=0.0, help="seconds to stay alive after the last span")
    parser.add_argument("--otlp", help="send OTLP/HTTP to this collector with the stock exporter instead")
    args = parser.parse_args()

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    provider = TracerProvider(resource=Resource.create({"service.name": "fault-app"}))
    trace.set_tracer_provider(provider)
    if args.otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        processor: Any = BatchSpanProcessor(OTLPSpanExporter(endpoint=args.otlp.rstrip("/") + "/v1/traces"),
                                            max_queue_size=100_000, schedule_delay_millis=200)  # fmt: skip
        provider.add_span_processor(processor)
        processor.stats = lambda: {}
    else:
        processor = promptwall_otel.configure(schedule_delay_millis=200)
    tracer = trace.get_tracer("fault-app")
    rss_start = rss_kb("VmRSS:")
    emitted = 0
    began = time.monotonic()
    try:
        for n in range(args.count):
            if args.rate:
                delay = began + n / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            chat(tracer, args.run + ("-POISON" if n == args.poison_at else ""), args.start + n)
            emitted += 1
            if n % 1000 == 999:
                print(json.dumps({"progress": emitted}), flush=True)
        print(json.dumps({"progress": emitted, "lingering": True}), flush=True)
        time.sleep(args.linger)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        provider.shutdown()
        print(json.dumps({"emitted": emitted, "stats": processor.stats(), "rss_start_kb": rss_start,
                          "rss_peak_kb": rss_kb("VmHWM:")}), flush=True)  # fmt: skip
        sys.stdout.flush()


if __name__ == "__main__":
    main()
