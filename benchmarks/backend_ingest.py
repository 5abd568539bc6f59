"""The local backend's ingest rate: 4 concurrent clients posting batches of events, as exporters do.

    python benchmarks/backend_ingest.py [--seconds 6] [--clients 4] [--batch 500] [--db PATH] [--rounds 1]
                                        [--alone] [--tree DIR --tree DIR]

``promptwall-otel serve`` runs in its own process on a database file (WAL,
as users run it), pinned to CPU 0; the clients run on CPU 1. Each request
is what our exporter sends: ``--batch`` records (500: the exporter's full
batch) encoded and gzipped by the exporter's own functions
(``transport.encoding``, ``transport.http.gzip_body``), each record shaped
like the mapping's (tokens, model, session, ~1 KB of prompt and answer,
metadata) with a ``request_id`` of the mapping's form (``gen-`` and 40 hex
digits of a hash: random order, as real ids arrive), every one new.
Reported: events stored per second (from the 200 replies), the server's CPU
µs per event, and the p50/p99 of one request.

``--tree DIR`` (twice or more) runs the server from each source tree in
turn, round by round on one fresh database per tree, so that two versions
are compared in the same minutes of this shared VM (e.g. ``main`` extracted
with ``git archive main | tar -x -C /tmp/before``); ``--alone`` runs the
ingest-alone phase only.

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
import hashlib
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
from promptwall_otel.transport.encoding import body_of, encode  # noqa: E402
from promptwall_otel.transport.http import gzip_body  # noqa: E402

KEY = "pk_bench"


def batch(run: str, n: int, size: int) -> bytes:
    """``size`` events started now (distinct microseconds), as the exporter sends a batch of them."""
    now = datetime.now(timezone.utc)
    events = [{
        "request_id": "gen-" + hashlib.sha256(f"{run}-{n}-{i}".encode()).hexdigest()[:40], "mode": "sdk", "model": "gpt-4o-mini", "provider": "openai",
        "started_at": format_timestamp(now + timedelta(microseconds=i)),
        "finished_at": format_timestamp(now + timedelta(seconds=1.2, microseconds=i)),
        "prompt_tokens": 850, "completion_tokens": 120, "session_id": f"conv-{i % 50}", "end_user_id": f"u-{i % 7}",
        "prompt": "Please summarise the attached quarterly report. " * 10, "answer": "The three biggest risks are " * 10,
        "metadata": {"gen_ai": {"response_id": f"chatcmpl-{run}-{n}-{i}", "finish_reasons": ["stop"]}, "tier": "pro"},
        "integration_id": "otel:bench@1", "status": "ok", "latency_ms": 1200,
    } for i in range(size)]  # fmt: skip
    return gzip_body(body_of([encode(event) for event in events]))


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


def start_server(tree: Path, db: str) -> subprocess.Popen:
    """``promptwall-otel serve`` from ``tree`` on ``db``, pinned to CPU 0; its URL is its first line."""
    env = dict(os.environ, PYTHONPATH=str(tree), PROMPTWALL_LOCAL_KEYS=f"bench={KEY}")
    return subprocess.Popen([sys.executable, "-m", "promptwall_otel", "serve", "--port", "0", "--db", db],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=str(tree),
                            preexec_fn=lambda: os.sched_setaffinity(0, {0}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500, help="events per request (the exporter sends up to 500)")
    parser.add_argument("--db", help="start from this database (used in place; events go to App 'bench')")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the phases (alone, paced poller, busy poller)")
    parser.add_argument("--poll-interval", type=float, default=0.5,
                        help="the paced poller's pause after each read (a console tab reads one page every 3 s)")
    parser.add_argument("--alone", action="store_true", help="the ingest-alone phase only")
    parser.add_argument("--tree", action="append", type=Path,
                        help="run the server from this source tree (repeat to compare trees round by round)")
    args = parser.parse_args()
    trees = args.tree or [ROOT]
    if args.db and len(trees) > 1:
        parser.error("--db is used in place: compare trees on fresh databases")
    os.sched_setaffinity(0, {1})
    run = f"b{int(time.time())}"
    phases = {"alone": None}
    if not args.alone:
        phases.update({f"paced poller ({args.poll_interval:g} s)": args.poll_interval, "busy poller": 0.0})
    count = int(args.seconds * 30_000 / args.batch * args.rounds * len(phases) * len(trees)) + 50  # room for 30,000/s
    bodies = iter([batch(run, n, args.batch) for n in range(count)])  # each body once: every event is new
    results: Dict[Path, Dict[str, List[Dict[str, float]]]] = {tree: {name: [] for name in phases} for tree in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for tree in trees:
                db = args.db or str(Path(tmp) / f"bench-{trees.index(tree)}.db")
                server = start_server(tree, db)
                try:
                    assert server.stdout is not None
                    url = server.stdout.readline().split()[-1]
                    for name, poll in phases.items():
                        results[tree][name].append(load(url, bodies, args.seconds, args.clients, poll, server.pid))
                finally:
                    server.terminate()
                    server.wait(15)
    for tree in trees:
        print(f"{tree}: {args.clients} clients, batches of {args.batch}, {args.rounds} × {args.seconds:g} s per phase, "
              f"server pinned to one core, {'database ' + args.db if args.db else 'fresh database'} (medians; per round):")
        medians = {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                   for name, runs in results[tree].items()}  # fmt: skip
        alone = medians["alone"]
        for name, m in medians.items():
            rounds = ", ".join(f"{r['events_per_s']:.0f}/{r['cpu_us']:.0f}" for r in results[tree][name])
            print(f"  {name:24} {m['events_per_s']:7.0f} events/s stored, {m['cpu_us']:3.0f} µs server CPU per event, "
                  f"request p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms"
                  + (f"; {m['polls']:.0f} console reads, p50 {m['poll_p50_ms']:.0f} ms, max {m['poll_max_ms']:.0f} ms; "
                     f"vs alone: throughput {m['events_per_s'] / alone['events_per_s']:.2f}, "
                     f"p50 {m['p50_ms'] / alone['p50_ms']:.2f}, p99 {m['p99_ms'] / alone['p99_ms']:.2f}"
                     if m is not alone else "")
                  + f" [events/s / µs per round: {rounds}]")  # fmt: skip


if __name__ == "__main__":
    main()
