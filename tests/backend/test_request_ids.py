"""``request_id`` is unique per App through a 64-bit hash of it, exactly, whatever the hashes do.

The store indexes each App's ids by ``_id_hash`` (an index of integers is a
third the size of one of the ids). Two ids of an App that share a hash must
still both be stored, each once, and each found again by its id. Real
collisions are about one pair in 10**8 at 10**6 events, so these tests swap
in a hash with only four values: every batch is full of them. A database of
the earlier layout (unique on the ids themselves) is upgraded in place when
opened, with the same guarantees.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

from hypothesis import HealthCheck, given, settings

import promptwall_otel.backend.store as store_module
from promptwall_otel.backend.store import EventStore
from promptwall_otel.record import apply_defaults, format_timestamp
from tests.backend.test_rollups import START, _check_all, batches, windows

_real_hash = store_module._id_hash


@contextmanager
def four_hashes() -> Iterator[None]:
    """Every id hashed to one of four values, for the store's writes, reads and upgrade alike."""
    store_module._id_hash = lambda request_id: _real_hash(request_id) % 4
    try:
        yield
    finally:
        store_module._id_hash = _real_hash


def _ids(path: str) -> List[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT app, request_id, id_hash FROM app_events ORDER BY seq").fetchall()
    finally:
        conn.close()


def test_the_hash_is_stable_and_64_bits() -> None:
    """Stored hashes must mean the same in the next process: no per-process seed (unlike ``hash()``)."""
    assert _real_hash("gen-1") == _real_hash("gen-1") != _real_hash("gen-2")
    assert _real_hash("gen-1") == -5583533846545676354  # BLAKE2b-64 of b"gen-1", big-endian, signed: as stored
    assert _real_hash("gen-1") == int.from_bytes(hashlib.blake2b(b"gen-1", digest_size=8).digest(), "big", signed=True)
    assert -(2**63) <= _real_hash("\U0001f600" * 40) < 2**63


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches, window_list=windows)
def test_ids_sharing_a_hash_are_each_stored_once_and_found(batches: List[tuple], window_list: List[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp, four_hashes():
        path = str(Path(tmp) / "events.db")
        store = EventStore(path)
        try:
            accepted = sum(store.insert([apply_defaults(event) for event in raw], app) for app, raw in batches)
            distinct = {(app, event["request_id"]) for app, raw in batches for event in raw}
            assert accepted == len(distinct)
            stored = _ids(path)
            assert sorted((app, request_id) for app, request_id, _ in stored) == sorted(distinct)
            # at most one id per (App, hash); the others of that hash unhashed
            hashed = [(app, id_hash) for app, _, id_hash in stored if id_hash is not None]
            assert len(hashed) == len(set(hashed)) <= 8
            for app, request_id in distinct:
                assert store.event(app, request_id)["request_id"] == request_id
            assert store.event("app-a", "never-sent") is None
            # everything again, in another order: all skipped, nothing doubled
            assert sum(store.insert([apply_defaults(e) for e in reversed(raw)], app) for app, raw in batches) == 0
            _check_all(store, path, ["app-a", "app-b", None], window_list)
        finally:
            store.close()
        store = EventStore(path)  # and after a reopen
        try:
            assert sum(store.insert([apply_defaults(e) for e in raw], app) for app, raw in batches) == 0
        finally:
            store.close()


def test_an_earlier_layout_is_upgraded_in_place() -> None:
    """A table unique on (app, request_id), as versions before the hash wrote it, with no rollups yet."""
    with tempfile.TemporaryDirectory() as tmp, four_hashes():
        path = str(Path(tmp) / "events.db")
        earlier = store_module._EVENTS_TABLE.replace("id_hash INTEGER,", "").replace("(app, id_hash)", "(app, request_id)")
        assert "id_hash" not in earlier
        conn = sqlite3.connect(path)
        conn.execute(f"CREATE TABLE app_events ({earlier})")
        conn.execute("CREATE INDEX app_events_started ON app_events (app, started_at, seq)")
        ids = [f"old-{i}" for i in range(10)]
        conn.executemany("INSERT INTO app_events (seq, app, request_id, received_at, started_at, total_tokens) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         [(100 + i, "app-a" if i % 3 else "app-b", rid, format_timestamp(START), format_timestamp(START), i)
                          for i, rid in enumerate(ids)])  # fmt: skip
        conn.commit()
        conn.close()

        store = EventStore(path)
        try:
            stored = _ids(path)
            assert [(app, rid) for app, rid, _ in stored] == [("app-a" if i % 3 else "app-b", rid) for i, rid in enumerate(ids)]
            assert {id_hash for _, _, id_hash in stored} - {None} <= {0, 1, 2, 3}
            assert any(id_hash is None for _, _, id_hash in stored)  # ten ids on four hashes in two Apps
            conn = sqlite3.connect(path)
            try:
                assert [row[0] for row in conn.execute("SELECT seq FROM app_events ORDER BY seq")] == list(range(100, 110))
                indexes = {row[1] for row in conn.execute("PRAGMA index_list(app_events)")}
                assert {"app_events_started", "app_events_session", "app_events_model_recent"} <= indexes
                assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'app_events_hashed'").fetchall()
            finally:
                conn.close()
            assert store.overview("app-a", None, 13)["total_tokens"] == sum(i for i in range(10) if i % 3)
            for i, rid in enumerate(ids):
                app = "app-a" if i % 3 else "app-b"
                assert store.event(app, rid)["total_tokens"] == i
                assert store.insert([apply_defaults({"request_id": rid})], app) == 0
            assert store.insert([apply_defaults({"request_id": "new-1"})], "app-a") == 1
        finally:
            store.close()
        store = EventStore(path)  # upgraded once: opening again changes nothing
        try:
            assert len(_ids(path)) == 11
        finally:
            store.close()
