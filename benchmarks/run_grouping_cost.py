"""What ``group_agent_runs`` costs the application thread: span start and end, with grouping off and on.

    python benchmarks/run_grouping_cost.py [on|off] [--spans 20000]

One process per setting (run it under ``valgrind --tool=callgrind`` for
instruction counts, which do not drift with the machine's load): a
PromptWallSpanProcessor with its sending disabled (an unreachable endpoint,
a memory spool), and the same loop in both settings: an agent run (an
``invoke_agent`` span, three chat spans and a tool span under it) and ten
ordinary HTTP spans, repeated. Prints the application thread's CPU time per span, and the whole process's.
"""

from __future__ import annotations

import argparse
import time

from opentelemetry.sdk.trace import TracerProvider

from promptwall_otel import PromptWallSpanProcessor

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("on", "off"))
    parser.add_argument("--spans", type=int, default=20000)
    args = parser.parse_args()
    provider = TracerProvider()
    processor = PromptWallSpanProcessor(api_key="pk_bench", base_url="http://127.0.0.1:9", spool=False, max_attempts=1,
                                        group_agent_runs=args.mode == "on", schedule_delay_millis=60_000,
                                        max_queue_bytes=1 << 30)  # fmt: skip
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    loops = args.spans // 15
    started, started_all = time.thread_time(), time.process_time()
    for _ in range(loops):
        with tracer.start_as_current_span("invoke_agent helper", attributes={"gen_ai.operation.name": "invoke_agent"}):
            for _ in range(3):
                with tracer.start_as_current_span("chat gpt-4o-mini", attributes=CHAT):
                    pass
            with tracer.start_as_current_span("execute_tool lookup", attributes={"gen_ai.operation.name": "execute_tool"}):
                pass
        for _ in range(10):
            with tracer.start_as_current_span("GET /items", attributes={"http.route": "/items"}):
                pass
    spent, spent_all = time.thread_time() - started, time.process_time() - started_all
    spans = loops * 15
    print(f"{args.mode}: application thread {spent / spans * 1e6:.2f} µs per span, "
          f"whole process {spent_all / spans * 1e6:.2f} µs per span (the mapping thread's work so far included)")


if __name__ == "__main__":
    main()
