"""The Observability page's figures (``EventStore.overview``) against events whose answers are known."""

from __future__ import annotations

from promptwall_otel.backend.store import EventStore


def _event(i: int, **fields: object) -> dict:
    base = {"request_id": f"r{i}", "started_at": f"2026-01-0{1 + i % 2}T10:00:00.000000Z", "model": "m1",
            "provider": "p", "total_tokens": 10, "latency_ms": i, "status": "ok"}  # fmt: skip
    base.update(fields)
    return base


def test_totals_latency_decisions_and_breakdown() -> None:
    store = EventStore()
    events = [_event(i) for i in range(1, 101)]  # latencies 1..100
    events[0].update(status="error", cost_usd=0.5)
    events[1].update(status="blocked", model="m2")
    events[2].pop("latency_ms")
    events[3].pop("status")
    store.insert(events, "app")
    store.insert([_event(1, total_tokens=10**6, latency_ms=10**6)], "other")  # another App's: never counted

    stats = store.overview("app", None, 10)
    assert (stats["events"], stats["total_tokens"], stats["errors"]) == (100, 1000, 1)
    assert stats["credit_usd"] == 1000 * 30 / 1e6 and stats["llm_cost_usd"] == 0.5
    # 99 latencies (3 is missing): nearest rank ceil(99 * 0.5) = 50th -> 51, ceil(99 * 0.95) = 95th -> 96.
    assert (stats["p50_ms"], stats["p95_ms"]) == (51, 96)
    assert stats["decisions"] == {"ok": 97, "error": 1, "blocked": 1, "(none)": 1}
    rows = {(row["model"], row["provider"]): row for row in stats["by_model"]}
    assert rows[("m1", "p")]["events"] == 99 and rows[("m1", "p")]["errors"] == 1
    assert rows[("m2", "p")]["llm_cost_usd"] is None
    assert [row["bucket"] for row in stats["series"]] == ["2026-01-01", "2026-01-02"]
    assert sum(row["events"] for row in stats["series"]) == 100

    since = store.overview("app", "2026-01-02T00:00:00.000000Z", 13)
    assert since["events"] == 50 and [row["bucket"] for row in since["series"]] == ["2026-01-02T10"]
    assert store.overview("nobody", None, 10)["p50_ms"] is None
