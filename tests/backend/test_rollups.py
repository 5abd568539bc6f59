"""The rollups kept at write time always equal a scan of the events (issue 12's "at scale").

Random events (duplicates, absent fields, several Apps, hours and days) go
into a real SQLite file through ``EventStore.insert``; every aggregate read
(Observability for random windows and bucket sizes, billing, sessions, for
an App and for the admin) is compared with the same figures computed here
in Python from the stored rows themselves. Counts, token sums, percentiles,
series and sessions must match exactly; costs to floating-point rounding
(the sums are added in another order). Then the rollups are dropped and the
store reopened, as an earlier version's database is: the rebuilt ones must
match too.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
import sqlite3
import tempfile
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from promptwall_otel.backend.store import EventStore
from promptwall_otel.record import STATUSES, apply_defaults, format_timestamp

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
moments = st.datetimes(min_value=datetime(2026, 3, 1), max_value=datetime(2026, 3, 4),
                       timezones=st.just(timezone.utc))  # fmt: skip
maybe = st.none().__or__
events = st.fixed_dictionaries({
    "request_id": st.sampled_from([f"r{i}" for i in range(40)]),
    "started_at": moments.map(format_timestamp),
    "model": maybe(st.sampled_from(["gpt", "claude", "(unknown)", ""])),
    "provider": maybe(st.sampled_from(["openai", "anthropic"])),
    "status": maybe(st.sampled_from(STATUSES)),
    "prompt_tokens": maybe(st.integers(0, 10**6) | st.just(2**44)),
    "completion_tokens": maybe(st.integers(0, 10**6)),
    "total_tokens": maybe(st.integers(0, 2 * 10**6)),
    "latency_ms": maybe(st.integers(0, 40)),
    "cost_usd": maybe(st.floats(0, 10, allow_nan=False) | st.integers(0, 3)),
    "session_id": maybe(st.sampled_from(["s1", "s2", "s3", "s4"])),
    "end_user_id": maybe(st.sampled_from(["u1", "u2", "ü3"])),
})  # fmt: skip
batches = st.lists(st.tuples(st.sampled_from(["app-a", "app-b"]), st.lists(events, min_size=1, max_size=12)),
                   min_size=1, max_size=8)  # fmt: skip
on_the_hour = st.sampled_from(["2026-03-01T05:00:00.000000Z", "2026-03-02T00:00:00.000000Z", "2026-03-01T00:00:00.000000Z"])
windows = st.lists(st.tuples(maybe(moments.map(format_timestamp) | on_the_hour), st.sampled_from([10, 13, 16])),
                   min_size=1, max_size=4)  # fmt: skip


def _rows(path: str, app: Optional[str]) -> List[Dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM app_events" + (" WHERE app = ?" if app else ""), (app,) if app else ())
        return [dict(row) for row in rows]
    finally:
        conn.close()


def _label(row: Dict[str, Any]) -> tuple:
    return (row["model"] if row["model"] is not None else "(unknown)",
            row["provider"] if row["provider"] is not None else "(unknown)",
            row["status"] if row["status"] is not None else "(none)")  # fmt: skip


def _sums(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    costs = [row["cost_usd"] for row in rows if row["cost_usd"] is not None]
    return {
        "events": len(rows),
        **{name: sum(row[name] or 0 for row in rows) for name in ("prompt_tokens", "completion_tokens", "total_tokens")},
        "llm_cost_usd": pytest.approx(math.fsum(costs), rel=1e-9, abs=1e-9) if costs else None,
    }


def _nearest_rank(values: List[int], percent: int) -> Optional[int]:
    if not values:
        return None
    return sorted(values)[max(1, math.ceil(len(values) * percent / 100)) - 1]


def _check_overview(store: EventStore, path: str, app: Optional[str], since: Optional[str], chars: int) -> None:
    rows = [row for row in _rows(path, app) if since is None or row["started_at"] >= since]
    got = store.overview(app, since, chars)
    for name, value in _sums(rows).items():
        assert got[name] == value, (name, since, chars)
    assert got["errors"] == sum(row["status"] == "error" for row in rows)
    latencies = [row["latency_ms"] for row in rows if row["latency_ms"] is not None]
    assert (got["p50_ms"], got["p95_ms"]) == (_nearest_rank(latencies, 50), _nearest_rank(latencies, 95))
    decisions: Dict[str, int] = defaultdict(int)
    pairs: Dict[tuple, List[Dict[str, Any]]] = defaultdict(list)
    series: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for row in rows:
        model, provider, status = _label(row)
        decisions[status] += 1
        pairs[(model, provider)].append(row)
        series[row["started_at"][:chars]].append(row)
    assert got["decisions"] == dict(decisions)
    assert {(p["model"], p["provider"]): p for p in got["by_model"]} == {
        pair: {"model": pair[0], "provider": pair[1], **_sums(group), "errors": sum(r["status"] == "error" for r in group),
               "credit_usd": pytest.approx(sum(r["total_tokens"] or 0 for r in group) * 30 / 1e6)}
        for pair, group in pairs.items()
    }  # fmt: skip
    assert got["series"] == [
        {"bucket": bucket, "events": len(group), "total_tokens": sum(r["total_tokens"] or 0 for r in group)}
        for bucket, group in sorted(series.items())
    ]


def _check_billing(store: EventStore, path: str, app: Optional[str]) -> None:
    rows = _rows(path, app)
    bill = store.billing(app)
    for name, value in _sums(rows).items():
        assert bill[name] == value, name
    by_model: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    by_day: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_model[_label(row)[0]].append(row)
        by_day[row["started_at"][:10]].append(row)
    for got, expected, label in ((bill["by_model"], by_model, "model"), (bill["by_day"], by_day, "day")):
        assert [row[label] for row in got] == sorted(expected)
        for row in got:
            assert {k: row[k] for k in ("events", "prompt_tokens", "completion_tokens", "total_tokens", "llm_cost_usd")} \
                == _sums(expected[row[label]])  # fmt: skip


def _check_sessions(store: EventStore, path: str, app: Optional[str]) -> None:
    groups: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for row in _rows(path, app):
        if row["session_id"] is not None:
            groups[row["session_id"]].append(row)
    expected = {
        session_id: {"session_id": session_id, "turns": len(group), "first_at": min(r["started_at"] for r in group),
                     "last_at": max(r["started_at"] for r in group),
                     "total_tokens": sum(r["total_tokens"] or 0 for r in group),
                     "end_user_id": max((r["end_user_id"] for r in group if r["end_user_id"] is not None), default=None)}
        for session_id, group in groups.items()
    }  # fmt: skip
    got = store.sessions(app, 100)
    assert {row["session_id"]: row for row in got} == expected
    assert [row["last_at"] for row in got] == sorted((row["last_at"] for row in got), reverse=True)


def _check_all(store: EventStore, path: str, apps: List[Optional[str]], window_list: List[tuple]) -> None:
    for app in apps:
        for since, chars in window_list:
            _check_overview(store, path, app, since, chars)
        _check_billing(store, path, app)
        _check_sessions(store, path, app)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(batches=batches, window_list=windows)
def test_rollups_equal_a_scan_and_survive_a_rebuild(batches: List[tuple], window_list: List[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "events.db")
        store = EventStore(path)
        accepted = 0
        for app, raw in batches:
            accepted += store.insert([apply_defaults(event) for event in raw], app)
        assert accepted == len({(app, e["request_id"]) for app, raw in batches for e in raw})
        apps: List[Optional[str]] = ["app-a", "app-b", None]
        _check_all(store, path, apps, window_list)
        store.close()

        # An earlier version's database: no rollups. Opening it builds them from the events.
        conn = sqlite3.connect(path)
        conn.executescript("DROP TABLE rollup_counts; DROP TABLE rollup_latency; DROP TABLE app_sessions; "
                           "DELETE FROM backend_meta WHERE name = 'rollups';")  # fmt: skip
        conn.close()
        store = EventStore(path)
        try:
            _check_all(store, path, apps, window_list)
        finally:
            store.close()


def test_windows_starting_mid_hour_and_mid_day_read_each_event_once() -> None:
    """Events on both sides of every bound the windows split at: hour, day, and ``since`` itself."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "events.db")
        store = EventStore(path)
        since = START + timedelta(hours=5, minutes=30)
        edges = [since - timedelta(microseconds=1), since, since + timedelta(microseconds=1),
                 START + timedelta(hours=6) - timedelta(microseconds=1), START + timedelta(hours=6),
                 START + timedelta(days=1) - timedelta(microseconds=1), START + timedelta(days=1),
                 START + timedelta(days=2, hours=3)]  # fmt: skip
        store.insert([apply_defaults({"request_id": f"e{i}", "started_at": format_timestamp(moment), "latency_ms": i,
                                      "total_tokens": 10 ** i}) for i, moment in enumerate(edges)], "app")  # fmt: skip
        got = store.overview("app", format_timestamp(since), 13)
        assert got["events"] == 7 and got["total_tokens"] == sum(10**i for i in range(1, 8))
        assert got["p50_ms"] == 4 and got["p95_ms"] == 7
        assert sum(row["events"] for row in got["series"]) == 7
        store.close()


def test_concurrent_writers_share_commits_and_store_each_event_once() -> None:
    """Group commit: batches from many threads (ids overlapping within and across them) are stored once each."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "events.db")
        store = EventStore(path)

        def writer(thread: int) -> int:
            accepted = 0
            for n in range(30):
                batch = [apply_defaults({"request_id": f"r{(thread * 7 + n * 3 + i) % 150}", "total_tokens": 1,
                                         "session_id": f"s{i % 3}", "latency_ms": i}) for i in range(10)]  # fmt: skip
                accepted += store.insert(batch, ("app-a", "app-b")[thread % 2])
            return accepted

        with ThreadPoolExecutor(8) as pool:
            accepted = sum(pool.map(writer, range(8)))
        rows = _rows(path, None)
        assert accepted == len(rows) == len({(row["app"], row["request_id"]) for row in rows})
        _check_all(store, path, ["app-a", "app-b", None], [(None, 10), (format_timestamp(START), 13)])
        store.close()


def test_a_filter_without_an_index_reads_a_bounded_slice_and_pages_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Provider/use case/metadata filters read at most SCAN_ROWS events a page; the cursor reads on, losing none."""
    import promptwall_otel.backend.store as store_module

    monkeypatch.setattr(store_module, "SCAN_ROWS", 7)
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore(str(Path(tmp) / "events.db"))
        events = [apply_defaults({"request_id": f"e{i}", "started_at": format_timestamp(START + timedelta(minutes=i)),
                                  "provider": "rare" if i % 10 == 3 else "common", "metadata": {"k": str(i % 10)}})
                  for i in range(40)]  # fmt: skip
        store.insert(events, "app")
        for filters in ({"provider": "rare"}, {"metadata": {"k": "3"}}):
            found, cursor, pages = [], None, 0
            while True:
                page, cursor = store.recent("app", 2, cursor, **filters)  # type: ignore[arg-type]
                found += [event["request_id"] for event in page]
                pages += 1
                if cursor is None:
                    break
            assert found == [f"e{i}" for i in (33, 23, 13, 3)], filters
            assert pages >= 40 // 7, "each page stopped looking after SCAN_ROWS events"
        store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # fmt: skip
@given(batches=batches, limit=st.integers(1, 5), scan_rows=st.integers(1, 12),
       provider=st.sampled_from([None, "openai"]))  # fmt: skip
def test_the_admins_pages_merge_every_apps_events_in_order_once(batches: List[tuple], limit: int, scan_rows: int,
                                                                 provider: Optional[str]) -> None:  # fmt: skip
    import promptwall_otel.backend.store as store_module

    saved, store_module.SCAN_ROWS = store_module.SCAN_ROWS, scan_rows
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "events.db")
            store = EventStore(path)
            for app, raw in batches:
                store.insert([apply_defaults(event) for event in raw], app)
            conn = sqlite3.connect(path)
            expected = [tuple(row) for row in conn.execute(
                "SELECT app, request_id FROM app_events WHERE ? IS NULL OR provider = ? ORDER BY started_at DESC, seq DESC",
                (provider, provider))]  # fmt: skip
            newest = dict(conn.execute("SELECT request_id, app FROM app_events ORDER BY seq"))
            conn.close()
            found, cursor = [], None
            for _ in range(1000):
                page, cursor = store.recent(None, limit, cursor, provider=provider)
                assert len(page) <= limit
                found += [(event["app"], event["request_id"]) for event in page]
                if cursor is None:
                    break
            assert found == expected
            for request_id, app in newest.items():
                event = store.event(None, request_id)
                assert event is not None and event["app"] == app, "the admin sees the newest event of an id"
            store.close()
    finally:
        store_module.SCAN_ROWS = saved


def test_checkpoints_run_off_the_commit_path_and_the_wal_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits never checkpoint (SQLite's automatic checkpoint is off); the checkpointer thread copies the
    WAL into the database file as writes arrive, and the writer starts the WAL over once it passes its bound."""
    from promptwall_otel.backend import store as store_module

    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY_S", 0.01)
    monkeypatch.setattr(store_module, "WAL_MAX_BYTES", 1024 * 1024)
    monkeypatch.setattr(store_module, "WAL_KEEP_BYTES", 512 * 1024)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.db"
        store = EventStore(str(path))
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        wal_sizes = []
        for n in range(200):  # ~8 MiB of prompts, 40 KiB a commit
            store.insert([apply_defaults({"request_id": f"r{n}-{i}", "prompt": f"{n}-{i} " + "x" * 4000})
                          for i in range(10)], "app")  # fmt: skip
            wal_sizes.append((path.parent / "events.db-wal").stat().st_size)
        assert max(wal_sizes) < 1024 * 1024 + 256 * 1024, max(wal_sizes)  # the bound and one commit; else ~10 MiB
        deadline = time.monotonic() + 10
        while path.stat().st_size < 8 * 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.01)  # the checkpointer copies what the last commits left in the WAL
        assert path.stat().st_size >= 8 * 1024 * 1024
        assert len(_rows(str(path), "app")) == 2000
        store.close()
