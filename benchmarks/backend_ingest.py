"""The local backend's ingest rate: 4 concurrent clients posting batches of events, as exporters do.

    python benchmarks/backend_ingest.py [--seconds 6] [--clients 4] [--batch 100] [--db PATH] [--rounds 1]

``promptwall-otel serve`` runs in its own process on a database file (WAL,
as users run it), pinned to CPU 0; the clients run on CPU 1. Each batch is
gzip JSON of ``--batch`` events shaped like the exporter's (tokens, model,
session, ~1 KB of prompt and answer, metadata), every ``request_id`` new.
Reported: events stored per second (from the 200 replies), the server's CPU
µs per event, and the p50/p99 of one request.

Then the same load again while a console poller (on the clients' CPU) reads
what a browser on the console reads, one request at a time:
``/api/console/billing``, the all-time and last-day Observability pages and
``/api/console/sessions``, for the App being written to: paced (a pause of
``--poll-interval`` after each read, several open tabs' worth) and busy (no
pause at all). The phases alternate ``--rounds`` times on one server and
are printed with their ratios to ingest alone. ``--db`` starts from an existing database
(e.g. ``console_pages.py``'s 1,000,000 events, App ``bench``: the events
are written to that App, so the poller reads all of them); it is used in
place and grows by what the run writes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.procstat import cpu_seconds  # noqa: E402
from promptwall_otel.record import format_timestamp  # noqa: E402
KEY = "pk_bench"


def batch(run: str, n: int, size: int) -> bytes:
    """``size`` events started now (distinct microseconds), as an exporter's batch is."""
    now = datetime.now(timezone.utc)
    events = [{
        "request_id": f"{run}-{n}-{i}", "mode": "sdk", "model": "gpt-4o-mini", "provider": "openai",
        "started_at": format_timestamp(now + timedelta(microseconds=i)),
        "finished_at": format_timestamp(now + timedelta(seconds=1.2, microseconds=i)),
        "prompt_tokens": 850, "completion_tokens": 120, "session_id": f"conv-{i % 50}", "end_user_id": f"u-{i % 7}",
        "prompt": "Please summarise the attached quarterly report. " * 10, "answer": "The three biggest risks are " * 10,
        "metadata": {"gen_ai": {"response_id": f"chatcmpl-{run}-{n}-{i}", "finish_reasons": ["stop"]}, "tier": "pro"},
        "integration_id": "otel:bench@1", "status": "ok", "latency_ms": 1200,
    } for i in range(size)]  # fmt: skip
    return gzip.compress(json.dumps({"events": events}).encode())


def load(url: str, bodies: Iterator[bytes], seconds: float, clients: int, poll: Optional[float],
         server_pid: int) -> Dict[str, float]:  # fmt: skip
    """One phase: ``clients`` posting for ``seconds``, and a poller pausing ``poll`` s between reads (None: none)."""
    import httpx

    latencies: List[float] = []
    polls: List[float] = []
    stored: Dict[str, int] = {"events": 0}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        mine, count = [], 0
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = http.post(url + "/v1/events", content=next(bodies), headers={
                    "Content-Type": "application/json", "Content-Encoding": "gzip", "X-API-Key": KEY})  # fmt: skip
                mine.append(time.perf_counter() - started)
                count += response.json()["accepted"]
        with lock:
            latencies.extend(mine)
            stored["events"] += count

    def poller() -> None:
        with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": KEY}) as http:
            assert http.post("/login", data={"key": KEY}).status_code == 303
            pages = ["/api/console/billing", "/observability?window=all", "/observability?window=day",
                     "/api/console/sessions"]  # fmt: skip
            while time.monotonic() < stop:
                for page in pages:
                    started = time.perf_counter()
                    assert http.get(page).status_code == 200, page
                    polls.append(time.perf_counter() - started)
                    time.sleep(poll or 0)

    before = cpu_seconds(server_pid)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    if poll is not None:
        threads.append(threading.Thread(target=poller))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = cpu_seconds(server_pid) - before
    latencies.sort()
    polls.sort()
    events = stored["events"]
    return {
        "events_per_s": events / seconds, "cpu_us": cpu / max(events, 1) * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1000, "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "polls": len(polls), "poll_p50_ms": polls[len(polls) // 2] * 1000 if polls else 0.0,
        "poll_max_ms": polls[-1] * 1000 if polls else 0.0,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--db", help="start from this database (used in place; events go to App 'bench')")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the phases (alone, paced poller, busy poller)")
    parser.add_argument("--poll-interval", type=float, default=0.5,
                        help="the paced poller's pause after each read (a console tab reads one page every 3 s)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    run = f"b{int(time.time())}"
    phases = {"alone": None, f"paced poller ({args.poll_interval:g} s)": args.poll_interval, "busy poller": 0.0}
    count = int(args.seconds * 30_000 / args.batch * args.rounds * len(phases)) + 50  # room for 30,000 events/s
    bodies = iter([batch(run, n, args.batch) for n in range(count)])  # each body once: every event is new
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "bench.db")
        env = dict(os.environ, PYTHONPATH=str(ROOT), PROMPTWALL_LOCAL_KEYS=f"bench={KEY}")
        server = subprocess.Popen([sys.executable, "-m", "promptwall_otel", "serve", "--port", "0", "--db", db],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                  preexec_fn=lambda: os.sched_setaffinity(0, {0}))  # fmt: skip
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[-1]
            results: Dict[str, List[Dict[str, float]]] = {name: [] for name in phases}
            for _ in range(args.rounds):
                for name, poll in phases.items():
                    results[name].append(load(url, bodies, args.seconds, args.clients, poll, server.pid))
        finally:
            server.terminate()
            server.wait(15)
    print(f"{args.clients} clients, batches of {args.batch}, {args.rounds} × {args.seconds:g} s per phase, "
          f"server pinned to one core, {'database ' + args.db if args.db else 'empty database'} (medians):")
    medians = {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for name, runs in results.items()}
    alone = medians["alone"]
    for name, m in medians.items():
        print(f"  {name:24} {m['events_per_s']:7.0f} events/s stored, {m['cpu_us']:3.0f} µs server CPU per event, "
              f"request p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms"
              + (f"; {m['polls']:.0f} console reads, p50 {m['poll_p50_ms']:.0f} ms, max {m['poll_max_ms']:.0f} ms; "
                 f"vs alone: throughput {m['events_per_s'] / alone['events_per_s']:.2f}, "
                 f"p50 {m['p50_ms'] / alone['p50_ms']:.2f}, p99 {m['p99_ms'] / alone['p99_ms']:.2f}"
                 if m is not alone else ""))  # fmt: skip

if __name__ == "__main__":
    main()
