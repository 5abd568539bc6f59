"""The local backend's ingest rate: 4 concurrent clients posting batches of events, as exporters do.

    python benchmarks/backend_ingest.py [--seconds 6] [--clients 4] [--batch 100]

``promptwall-otel serve`` runs in its own process on a database file (WAL,
as users run it), pinned to CPU 0; the clients run on CPU 1. Each batch is
gzip JSON of ``--batch`` events shaped like the exporter's (tokens, model,
session, ~1 KB of prompt and answer, metadata), every ``request_id`` new.
Reported: events stored per second (from the 200 replies), the server's CPU
µs per event, and the p50/p99 of one request.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.procstat import cpu_seconds  # noqa: E402
KEY = "pk_bench"


def batch(run: str, n: int, size: int) -> bytes:
    events = [{
        "request_id": f"{run}-{n}-{i}", "mode": "sdk", "model": "gpt-4o-mini", "provider": "openai",
        "started_at": "2026-04-26T10:00:00.000000Z", "finished_at": "2026-04-26T10:00:01.200000Z",
        "prompt_tokens": 850, "completion_tokens": 120, "session_id": f"conv-{i % 50}", "end_user_id": f"u-{i % 7}",
        "prompt": "Please summarise the attached quarterly report. " * 10, "answer": "The three biggest risks are " * 10,
        "metadata": {"gen_ai": {"response_id": f"chatcmpl-{run}-{n}-{i}", "finish_reasons": ["stop"]}, "tier": "pro"},
        "integration_id": "otel:bench@1", "status": "ok", "latency_ms": 1200,
    } for i in range(size)]  # fmt: skip
    return gzip.compress(json.dumps({"events": events}).encode())


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    run = f"b{int(time.time())}"
    bodies = [batch(run, n, args.batch) for n in range(int(args.seconds * 400 / args.batch * 100) + 50)]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PROMPTWALL_LOCAL_KEYS=KEY)
        server = subprocess.Popen([sys.executable, "-m", "promptwall_otel", "serve", "--port", "0", "--db",
                                   str(Path(tmp) / "bench.db")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=env, preexec_fn=lambda: os.sched_setaffinity(0, {0}))  # fmt: skip
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[-1] + "/v1/events"
            cursor = iter(range(10**9))
            latencies: List[float] = []
            stored: Dict[str, int] = {"events": 0}
            lock = threading.Lock()
            stop = time.monotonic() + args.seconds

            def client() -> None:
                mine, count = [], 0
                with httpx.Client(timeout=30) as http:
                    while time.monotonic() < stop:
                        started = time.perf_counter()
                        response = http.post(url, content=bodies[next(cursor) % len(bodies)], headers={
                            "Content-Type": "application/json", "Content-Encoding": "gzip", "X-API-Key": KEY})  # fmt: skip
                        mine.append(time.perf_counter() - started)
                        count += response.json()["accepted"]
                with lock:
                    latencies.extend(mine)
                    stored["events"] += count

            before = cpu_seconds(server.pid)
            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            cpu = cpu_seconds(server.pid) - before
        finally:
            server.terminate()
            server.wait(15)
    latencies.sort()
    events = stored["events"]
    print(f"{args.clients} clients, batches of {args.batch}, {args.seconds:g} s, server pinned to one core:")
    print(f"{events / args.seconds:.0f} events/s stored, {cpu / max(events, 1) * 1e6:.0f} µs server CPU per event, "
          f"request p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
