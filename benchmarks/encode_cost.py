"""What mapping and encoding cost per GenAI span on the exporting thread, as figures that hold still on a busy machine.

    python benchmarks/encode_cost.py                 # CPU µs per span of encode_spans, best and median of 7
    python benchmarks/encode_cost.py --bytecodes     # Python bytecodes per span, per function (deterministic)
    PROMPTWALL_PURE_PYTHON=1 python benchmarks/encode_cost.py   # the same, the modules as pure Python
    valgrind --tool=callgrind python benchmarks/encode_cost.py --spans N --once   # instructions: run N and 0, subtract

The spans are ``app_thread_cost.py``'s GenAI chat spans, finished, in the
SDK's batches of 512; a fresh exporter maps each repetition (the ledger
remembers calls it handed out, so the same spans twice would be duplicates).
Nothing is sent. ``--bytecodes`` counts the sources' bytecodes (compiled code
executes none), so it runs them as pure Python. Wall time on this shared 2-core machine drifts by 10-40%;
the thread's CPU time drifts less, bytecode and instruction counts not at all.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.app_thread_cost import KEY, finished_spans  # noqa: E402


def exporter() -> Any:
    from promptwall_otel import PromptWallSpanExporter

    return PromptWallSpanExporter(api_key=KEY, base_url="http://127.0.0.1:9", spool=False)


def encode_all(ours: Any, spans: List[Any]) -> None:
    for index in range(0, len(spans), 512):
        ours.encode_spans(spans[index:index + 512])


def bytecodes(spans: List[Any]) -> Dict[str, int]:
    """Bytecodes executed per function while a warm exporter encodes ``spans``."""
    ours = exporter()
    ours.encode_spans(spans[:100])  # plans, prices and resource facts cached, as in a running process
    counts: Dict[str, int] = collections.Counter()

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        return trace

    sys.settrace(trace)
    try:
        for index in range(100, len(spans), 512):
            ours.encode_spans(spans[index:index + 512])
    finally:
        sys.settrace(None)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=4096)
    parser.add_argument("--bytecodes", action="store_true", help="count bytecodes per function instead of timing")
    parser.add_argument("--once", action="store_true", help="encode once, print nothing (for callgrind)")
    args = parser.parse_args()
    if args.bytecodes:
        os.environ["PROMPTWALL_PURE_PYTHON"] = "1"  # before promptwall_otel is imported: trace the sources
    spans = finished_spans(max(args.spans, 200) if not args.once else 200 + args.spans)
    if args.once:
        ours = exporter()
        ours.encode_spans(spans[:200])  # warm, as above; run with --spans 0 too and subtract
        for index in range(200, len(spans), 512):
            ours.encode_spans(spans[index:index + 512])
        return
    if args.bytecodes:
        counts = bytecodes(spans)
        measured = len(spans) - 100
        print(f"{sum(counts.values()) / measured:.0f} bytecodes per span; the 25 largest by function:")
        for name, count in sorted(counts.items(), key=lambda item: -item[1])[:25]:
            print(f"{count / measured:8.1f}  {name}")
        return
    timings = []
    for _ in range(7):
        ours = exporter()  # made outside the timing: it starts a sending thread
        start = time.thread_time()
        encode_all(ours, spans)
        timings.append((time.thread_time() - start) / len(spans) * 1e6)
    from promptwall_otel.doctor import speed

    print(f"encode_spans: {min(timings):.1f} µs CPU per span at best, {statistics.median(timings):.1f} median of 7 "
          f"({len(spans)} GenAI chat spans, batches of 512; {speed().text})")  # fmt: skip


if __name__ == "__main__":
    main()
