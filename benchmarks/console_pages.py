"""How long each console page takes over a large database (issue 12's "at scale": 1M events, 200 ms a page).

    python benchmarks/console_pages.py [--events 1000000] [--db PATH] [--rounds 3]

Fills a SQLite file (kept, and reused when it already holds the events) with
one App's events spread over 30 days, 50 models, 20,000 sessions and a
metadata key, starts the backend in this process on a free port, logs in
through the console's form like a browser, and prints the median time of
each page and read endpoint over real HTTP. Nothing is mocked; the figures are the server's
whole answer (query, template, transfer on loopback).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptwall_otel.backend.server import BackendConfig, BackendServer  # noqa: E402
from promptwall_otel.backend.store import EventStore  # noqa: E402
from promptwall_otel.record import format_timestamp  # noqa: E402

APP_KEY = "bench-console-key"
BATCH = 10_000


def fill(store: EventStore, n: int) -> None:
    """``n`` events for App ``bench``, newest now, oldest 30 days ago."""
    have = int(store.billing("bench")["events"])
    if have >= n:
        return
    now = datetime.now(timezone.utc)
    step = timedelta(days=30) / n
    for start in range(have, n, BATCH):
        events = []
        for i in range(start, min(start + BATCH, n)):
            started = now - step * (n - i)
            events.append({
                "request_id": f"bench-{i}", "mode": "ingest", "started_at": format_timestamp(started),
                "model": f"model-{i % 50}", "provider": ("openai", "anthropic")[i % 2],
                "status": "error" if i % 97 == 0 else "ok", "session_id": f"s-{i % 20_000}",
                "end_user_id": f"u-{i % 5_000}", "prompt_tokens": 100 + i % 50, "completion_tokens": 20 + i % 30,
                "total_tokens": 120 + i % 50 + i % 30, "latency_ms": 50 + i % 900, "cost_usd": 0.0001,
                "prompt": f"question {i}", "answer": f"answer {i}", "metadata": {"feature": f"f-{i % 10}"},
            })  # fmt: skip
        store.insert(events, "bench")
        print(f"\rfilled {min(start + BATCH, n):,} / {n:,}", end="", flush=True)
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default=os.path.join(tempfile.gettempdir(), "promptwall-console-bench.db"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    store = EventStore(args.db)
    fill(store, args.events)
    server = BackendServer(BackendConfig(port=0, db=args.db, api_keys={APP_KEY: "bench"}), store).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            reply = client.post("/login", data={"key": APP_KEY})
            assert reply.status_code == 303, reply.status_code
            pages = ["/observability?window=hour", "/observability?window=day", "/observability?window=all",
                     "/traces", "/traces?model=model-7", "/traces?metadata.feature=f-3", "/traces?status=error",
                     "/traces?end_user_id=u-42", "/traces?session_id=s-42", "/traces?status=blocked",
                     "/traces/bench-123456", "/sessions", "/sessions/s-42", "/billing",
                     "/api/console/requests", "/api/console/requests?model=model-7&limit=1000",
                     "/api/console/requests?metadata.feature=f-3", "/api/console/sessions",
                     "/api/console/sessions/s-42", "/api/console/billing"]  # fmt: skip
            print(f"{'page':48} {'median ms':>10} {'max ms':>8}")
            for page in pages:
                times = []
                for _ in range(args.rounds):
                    began = time.perf_counter()
                    response = client.get(page, headers={"X-API-Key": APP_KEY} if page.startswith("/api/") else None)
                    times.append((time.perf_counter() - began) * 1000)
                    assert response.status_code in (200, 404), (page, response.status_code)
                print(f"{page:48} {statistics.median(times):10.0f} {max(times):8.0f}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
