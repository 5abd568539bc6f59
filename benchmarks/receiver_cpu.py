"""The receiver's CPU per span, step by step, without HTTP: a stable figure on a machine whose speed drifts.

    python benchmarks/receiver_cpu.py [--requests 200] [--rounds 3]

Replays ``receiver_throughput.py``'s request bodies (100 realistic chat spans
each, gzip) through what the receiver does with them, in the interpreter
settings ``promptwall-otel receive`` uses (``tune_interpreter_for_serving``):
a request's thread gunzips, reads the views (the compiled wire decoder, with
upb's parse and views beside it for comparison) and hands them to
``ReceiverCore.accept_spans`` (parent links, the waiting set); the mapping
step (``flush``: mapping, encoding, the hand-off to the sender) runs here
too, the background flusher stopped. Each step is timed with the thread's own CPU
clock (``time.thread_time``), best of ``--rounds``; the sender forwards to
the benchmark sink (a process of its own) on its own thread, not counted.
For the breakdown, mapping and encoding are also timed alone on the same
views, and gzip (what ``--forward-compression gzip`` adds on the sender's
thread: ISA-L when installed, and zlib level 1 for comparison) on the encoded
batches.

What this leaves out, and ``receiver_throughput.py`` includes: the HTTP
layer, the sender, thread switches and collections triggered elsewhere.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.receiver_throughput import requests_bodies  # noqa: E402
from benchmarks.sinks import Sinks  # noqa: E402


def best(rounds: int, step: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        started = time.thread_time()
        step()
        times.append(time.thread_time() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from promptwall_otel.mapping.ledger import TraceLedger
    from promptwall_otel.receiver.core import ReceiverCore
    from promptwall_otel.receiver.decode import decode_traces_protobuf, protobuf_span_views, span_views
    from promptwall_otel.serving import decompress
    from promptwall_otel.transport.encoding import body_of
    from promptwall_otel.transport.http import gzip_body
    from promptwall_otel.webserver import tune_interpreter_for_serving

    per_round = [requests_bodies(args.requests, 100, f"cpu{n}-{int(time.time())}") for n in range(args.rounds)]
    spans = args.requests * 100
    sinks = Sinks()
    tune_interpreter_for_serving()
    results: Dict[str, List[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as spool:
            # A forwarding buffer that never reaches its high-water mark here: every trace is mapped by
            # the request that completes it, as when the backend keeps up.
            core = ReceiverCore(sinks.events_url, "pk_bench", spool_root=spool, max_buffer_bytes=1 << 30)
            # Its mapping step runs here, timed on this thread: the background flusher is stopped.
            core._closed.set()
            core._wake.set()
            core._flusher.join()
            for bodies in per_round:  # every round its own spans: nothing is a duplicate
                raws = [decompress(body, "gzip", 1 << 30) for body in bodies]
                messages = [decode_traces_protobuf(raw) for raw in raws]
                views = [protobuf_span_views(raw)[0] for raw in raws]
                lap: Dict[str, float] = {
                    "gunzip": best(1, lambda: [decompress(body, "gzip", 1 << 30) for body in bodies]),
                    "views (compiled wire decoder, or upb where not built)": best(
                        1, lambda: [protobuf_span_views(raw) for raw in raws]),
                    "  upb instead: protobuf parse": best(1, lambda: [decode_traces_protobuf(raw) for raw in raws]),
                    "  upb instead: views": best(1, lambda: [span_views(message) for message in messages]),
                }
                intake = mapping_step = 0.0
                for request in views:  # a request's intake, then the flusher's step that maps it
                    started = time.thread_time()
                    core.accept_spans(request, "pk_bench")
                    taken = time.thread_time()
                    core.flush(force=False)
                    mapping_step += time.thread_time() - taken
                    intake += taken - started
                assert core.snapshot()["spans_waiting"] == 0, "spans were left waiting: not measured"
                lap["accept_spans (the request's intake: lineage, waiting set)"] = intake
                lap["mapping step (flusher: mapping, encoding, hand-off)"] = mapping_step
                flat = [view for request in views for view in request]
                records: List[Dict] = []
                lap["  of which mapping (map_batch, fresh ledger)"] = best(
                    1, lambda: records.extend(TraceLedger().map_batch(flat, core.mapping)))
                lines: List[bytes] = []
                lap["  of which encoding (orjson)"] = best(1, lambda: lines.extend(core._encoder.many(records)))
                lap["gzip of the batches (sender, --forward-compression gzip)"] = best(
                    1, lambda: [gzip_body(body_of(lines[i:i + 500])) for i in range(0, len(lines), 500)])
                lap["  zlib level 1 instead (without isal)"] = best(
                    1, lambda: [gzip.compress(body_of(lines[i:i + 500]), 1) for i in range(0, len(lines), 500)])
                for name, seconds in lap.items():
                    results.setdefault(name, []).append(seconds)
            core.close(10)
    finally:
        sinks.stop()
    print(f"{spans} spans a round, best of {args.rounds} rounds, µs of CPU per span on the thread doing each step")
    total = 0.0
    for name, seconds in results.items():
        figure = min(seconds) / spans * 1e6
        if not name.startswith(" ") and not name.startswith("gzip"):
            total += figure
        print(f"  {name:66s} {figure:6.1f}")
    print(f"  {'per span in all (gunzip + views + intake + mapping step)':66s} {total:6.1f}")


if __name__ == "__main__":
    main()
