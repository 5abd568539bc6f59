"""The receiver beside rotel, in one run: GenAI spans per second on one core, latency at half load, memory.

    python benchmarks/receiver_throughput.py [--seconds 8] [--spans-per-request 100]

Each server runs pinned to CPU 0 (one core), the load generator and the
sinks on CPU 1. The load is OTLP/HTTP protobuf, gzip, ``--spans-per-request``
realistic chat spans per request (the attributes of
``app_thread_cost.py``, ~2 KB of messages each), every span with its own
trace and response id, as a batching Collector sends them.

1. Saturation: ``--connections`` closed-loop clients for ``--seconds``;
   distinct spans/s acknowledged with 200 (503s are counted, not retried), the
   server's CPU µs per span (from /proc), and whether what was acknowledged
   left for the sink within 30 s (records delivered, from the receiver's
   /healthz; spans counted by the sink for rotel).
2. Half load: the same clients paced to half the saturated rate; p50/p99 of
   the request latency.
3. Peak RSS (``VmHWM``) over the whole run.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "collector"))

from benchmarks.app_thread_cost import KEY, genai_attributes  # noqa: E402
from benchmarks.procstat import cpu_seconds, peak_rss_mib  # noqa: E402
from benchmarks.sinks import Sinks  # noqa: E402


def pin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


def requests_bodies(count: int, per_request: int, run: str) -> List[bytes]:
    """``count`` gzip bodies of ``per_request`` spans each; every span a trace of its own with its own response id."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench", "service.version": "1"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(per_request):
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes=genai_attributes(i, run)):
            pass
    template = encode_spans(memory.get_finished_spans()).SerializeToString()
    bodies = []
    for n in range(count):
        request = ExportTraceServiceRequest.FromString(template)
        for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
            serial = n * per_request + i + 1
            span.trace_id = serial.to_bytes(8, "big") + b"\x11" * 8
            span.span_id = serial.to_bytes(8, "big")
            for attribute in span.attributes:
                if attribute.key == "gen_ai.response.id":
                    attribute.value.string_value = f"chatcmpl-{run}-{serial:010d}"
        bodies.append(gzip.compress(request.SerializeToString(), 6))
    return bodies


def load(url: str, bodies: List[bytes], seconds: float, connections: int, rate: Optional[float]) -> Dict[str, Any]:
    """Post bodies round-robin; ``rate`` requests/s in total (None: as fast as answered)."""
    import httpx

    latencies: List[float] = []
    statuses: Dict[int, int] = {}
    accepted: set = set()  # bodies answered 200: a body sent again after the bodies ran out is a duplicate
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    cursor = iter(range(10**9))

    def worker(index: int) -> None:
        mine: List[float] = []
        counts: Dict[int, int] = {}
        taken = set()
        interval = connections / rate if rate else 0.0
        next_at = time.monotonic() + index * interval / connections
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop:
                if interval:
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    next_at += interval
                index = next(cursor) % len(bodies)
                body = bodies[index]
                started = time.perf_counter()
                response = client.post(url, content=body, headers={
                    "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", "X-API-Key": KEY})  # fmt: skip
                mine.append(time.perf_counter() - started)
                counts[response.status_code] = counts.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    taken.add(index)
        with lock:
            accepted.update(taken)
            latencies.extend(mine)
            for status, n in counts.items():
                statuses[status] = statuses.get(status, 0) + n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {"statuses": statuses, "distinct_bodies": len(accepted), "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}  # fmt: skip


def start_receiver(events_url: str, spool: str, compression: str = "auto") -> "subprocess.Popen[str]":
    process = subprocess.Popen([sys.executable, "-m", "promptwall_otel", "receive", "--http", "127.0.0.1:0", "--grpc",
                                "off", "--forward-to", events_url, "--spool-dir", spool,
                                "--forward-compression", compression],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=lambda: pin(0))  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    process.url = line.split("http=", 1)[1].split()[0] + "/v1/traces"  # type: ignore[attr-defined]
    return process


def start_rotel_pinned(otlp_url: str) -> "subprocess.Popen[Any]":
    from run_rotel import free_port, start_rotel, wait_ready

    grpc_port, http_port = free_port(), free_port()
    process = start_rotel(grpc_port, http_port, otlp_url.rsplit("/v1/", 1)[0], {"X-API-Key": KEY},
                          batch_timeout="200ms")  # fmt: skip
    os.sched_setaffinity(process.pid, {0})
    wait_ready(process, grpc_port, http_port)
    process.url = f"http://127.0.0.1:{http_port}/v1/traces"  # type: ignore[attr-defined]
    return process


def _exported(process: Any) -> int:
    import httpx

    health = httpx.get(process.url.rsplit("/v1/", 1)[0] + "/healthz").json()
    return int(health.get("records_exported", 0))


def measure(name: str, process: Any, sinks: Sinks, bodies: List[bytes], per_request: int, seconds: float,
            connections: int) -> Dict[str, Any]:  # fmt: skip
    warm, bodies = bodies[-20:], bodies[:-20]  # warm-up spans must not come back as duplicates in the count
    load(process.url, warm, 1.0, 2, None)
    time.sleep(3)
    sinks.reset()
    exported_start = _exported(process) if name == "promptwall-otel receive" else 0
    cpu_before = cpu_seconds(process.pid)
    saturated = load(process.url, bodies, seconds, connections, None)
    cpu = cpu_seconds(process.pid) - cpu_before
    # Ours: distinct spans only, since a body accepted twice (once the bodies ran out) is a duplicate that
    # the receiver drops after little work. rotel forwards every copy in full: all of them count.
    ours = name == "promptwall-otel receive"
    accepted = (saturated["distinct_bodies"] if ours else saturated["statuses"].get(200, 0)) * per_request
    deadline = time.monotonic() + 30
    arrived = 0
    exported_before = exported_start
    while time.monotonic() < deadline:  # what was acknowledged must leave for the sink
        # Bodies repeat once the run outlasts them, and the events sink counts distinct ids: the receiver's
        # own count of records it delivered is the measure on our side, the sink's span count on rotel's.
        arrived = _exported(process) - exported_before if name == "promptwall-otel receive" else sinks.counts()[0]
        if arrived >= accepted:
            break
        time.sleep(0.5)
    rate = accepted / seconds
    half = load(process.url, bodies, seconds, connections, rate / 2 / per_request)
    return {"spans_per_s": rate, "cpu_us_per_span": cpu / max(accepted, 1) * 1e6, "refused": saturated["statuses"],
            "arrived": arrived, "accepted": accepted, "half_p50_ms": half["p50_ms"], "half_p99_ms": half["p99_ms"],
            "half_statuses": half["statuses"], "peak_rss_mib": peak_rss_mib(process.pid)}  # fmt: skip


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--spans-per-request", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2500, help="distinct bodies generated (spans are never repeated within a run)")
    parser.add_argument("--forward-compression", default="auto", choices=["auto", "gzip", "none"],
                        help="the receiver's; auto sends the loopback sink uncompressed (gzip: what a remote PromptWall costs)")
    args = parser.parse_args()
    pin(1)
    bodies = requests_bodies(args.requests, args.spans_per_request, f"r{int(time.time())}")
    results = {}
    sinks = Sinks()
    os.sched_setaffinity(sinks._process.pid, {1})
    try:
        with tempfile.TemporaryDirectory() as spool:
            for name in ("promptwall-otel receive", "rotel"):
                process = start_receiver(sinks.events_url, spool, args.forward_compression) if name != "rotel" \
                    else start_rotel_pinned(sinks.otlp_url)  # fmt: skip
                try:
                    results[name] = measure(name, process, sinks, bodies, args.spans_per_request, args.seconds,
                                            args.connections)  # fmt: skip
                finally:
                    process.terminate()
                    process.wait(15)
    finally:
        sinks.stop()
    print(f"{args.spans_per_request} GenAI spans per request, gzip, {args.connections} connections, {args.seconds:g} s; "
          f"server pinned to one core; receiver --forward-compression {args.forward_compression}")  # fmt: skip
    print("| server | spans/s (saturated) | CPU µs/span | p50 / p99 ms at half load | peak RSS MiB | acknowledged → arrived | statuses |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['spans_per_s']:.0f} | {r['cpu_us_per_span']:.0f} | {r['half_p50_ms']:.1f} / "
              f"{r['half_p99_ms']:.1f} | {r['peak_rss_mib']:.0f} | {r['accepted']} → {r['arrived']} | "
              f"{r['refused']} {r['half_statuses']} |")  # fmt: skip
    if len(results) == 2:
        ours, theirs = results["promptwall-otel receive"], results["rotel"]
        print(f"CPU per span, ours / rotel: {ours['cpu_us_per_span'] / theirs['cpu_us_per_span']:.1f}×")


if __name__ == "__main__":
    main()
