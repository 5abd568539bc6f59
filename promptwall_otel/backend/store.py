"""SQLite storage of the local backend: idempotent writes, the console's reads, per App.

Writes go through one connection behind one lock (SQLite serialises writers
anyway), and every write is committed before the HTTP response leaves. On a
database file (WAL), each reading thread has a connection of its own and
reads one snapshot per call without taking that lock, so a slow read never
holds up ingest; a ``:memory:`` store reads through the writer's connection.

Checkpoints (copying the WAL back into the database file, with its two
fsyncs) run on a thread and connection of their own, never in a commit:
SQLite's automatic checkpoint ran in the committing thread, under the
writer's lock, so every request waited on the disk behind it. The WAL is
bounded all the same: once its file passes :data:`WAL_MAX_BYTES`, the writer
itself, after that commit, checkpoints all of it so that the next commit
starts it over (as SQLite's automatic checkpoint did, but rarely), and
``journal_size_limit`` truncates the file back to :data:`WAL_KEEP_BYTES`.

Rollups kept at write time answer the console's aggregate reads at any size
(issue 12: every page within 200 ms at 1,000,000 events): per App and UTC
hour and day, per model/provider/status, the event count, token sums and
costs (``rollup_counts``); per hour, day and all time, a histogram of exact
latencies (``rollup_latency``, so p50/p95 are the events' own values); per
session, its turns, first/last start, tokens and end user (``app_sessions``).
A window that starts mid-hour reads that first partial hour from the events
themselves and the rest from the rollups.

Invariants: every row belongs to one App, ``request_id`` is unique within
its App (not across Apps), and every read names the App it reads (``None``
only for the admin, who reads all). The rollups are updated in the
transaction that inserts the events, from exactly the events inserted (not
the duplicates skipped), so they always equal a scan of ``app_events``:
counts and token sums exactly (up to 2**53), costs up to floating-point
rounding. A database without them (an earlier version's) gets them rebuilt
from its events when opened. Sums use ``TOTAL()`` or SQLite integers, which
turn to floating point rather than overflow. Reads are bounded in rows and
in bytes (:data:`MAX_PAGE_BYTES`), and pages continue from an opaque cursor.
"""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from hashlib import blake2b
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import orjson

from ..private_files import make_private_database
from ..record import format_timestamp, parse_timestamp

logger = logging.getLogger("promptwall_otel.backend")

CREDIT_USD_PER_MILLION_TOKENS = 30.0
"""Events-mode price: $30 per 1,000,000 tokens (prompt + completion)."""

# Columns that hold a scalar field of the event, in table order.
_SCALAR_COLUMNS = (
    "mode", "started_at", "finished_at", "provider", "model", "use_case", "team_id",
    "integration_id", "end_user_id", "user_id", "session_id", "prompt_tokens",
    "completion_tokens", "total_tokens", "cost_usd", "latency_ms", "status",
    "final_decision", "risk_score", "error_code", "prompt", "answer",
)  # fmt: skip
_JSON_COLUMNS = ("metadata", "policy_hits", "spans")

SCAN_ROWS = 50_000
"""Most events a page filtered on fields without an index reads (~0.1 s here); the next page reads on."""

MAX_PAGE_BYTES = 8 * 1024 * 1024
"""A read stops adding events once its reply passes this size (one event always fits: see checks.py)."""

WRITER_CACHE_KIB = 64 * 1024
"""The writer connection's page cache (SQLite's default is 2 MiB): the random pages of the id_hash and
session indexes stay in it between commits instead of being read back from the OS (~5 µs per event at 400k
events, store alone). Readers keep SQLite's default."""

CHECKPOINT_EVERY_S = 0.25
"""How often, while writes arrive, the checkpointer copies the WAL back: a page changed by several commits
in between is copied once (SQLite's default, every 1,000 frames, checkpointed after nearly every batch)."""

WAL_MAX_BYTES = 128 * 1024 * 1024
"""The WAL file's size past which the writer checkpoints all of it itself, so that the next commit starts
it over: the file never holds more than this plus one group commit."""

WAL_KEEP_BYTES = 64 * 1024 * 1024
"""``journal_size_limit``: the WAL file is truncated back to this after it restarts."""

# ``app_events``, not ``events``: a database written before Apps existed keeps its old table untouched.
# The filter indexes end with ``started_at`` (and, implicitly, ``seq``), so a filtered page reads its rows
# already newest first: with (app, end_user_id) alone, SQLite walked every event newest first to find a
# rare user's 50 (0.13 s at 1M events). Statuses other than ``ok`` are rare by nature: a partial index
# holds only them, which ``ok`` events never pay to maintain.
# ``seq`` is a plain rowid (an earlier version's AUTOINCREMENT cost 3 µs per event): rows are never deleted,
# so it only grows either way.
# ``request_id`` is unique per App through ``id_hash``, a 64-bit hash of it (_id_hash), not through the id
# itself: ids are random (hashes, UUIDs), so every new one lands on its own page of that index, and an index of
# 8-byte integers has a third as many pages to change (and write twice, to the WAL and back) as one of ~45-byte
# strings: -25% of SQLite's CPU per event at 360,000 events, more as the table grows. Another id of the App with
# the same hash (about one pair in 10**8 at 10**6 events) is stored with ``id_hash`` NULL, and found again
# by its id (see _insert_new).
_EVENTS_TABLE = f"""
    seq INTEGER PRIMARY KEY,
    app TEXT NOT NULL,
    request_id TEXT NOT NULL,
    id_hash INTEGER,
    received_at TEXT NOT NULL,
    {", ".join(f"{name} {'INTEGER' if name.endswith(('_tokens', '_ms')) else 'REAL' if name in ('cost_usd', 'risk_score') else 'TEXT'}" for name in _SCALAR_COLUMNS)},
    {", ".join(f"{name} TEXT" for name in _JSON_COLUMNS)},
    UNIQUE (app, id_hash)
"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS app_events ({_EVENTS_TABLE});
CREATE INDEX IF NOT EXISTS app_events_started ON app_events (app, started_at, seq);
CREATE INDEX IF NOT EXISTS app_events_session ON app_events (app, session_id, started_at);
DROP INDEX IF EXISTS app_events_user;
DROP INDEX IF EXISTS app_events_model;
CREATE INDEX IF NOT EXISTS app_events_user_recent ON app_events (app, end_user_id, started_at);
CREATE INDEX IF NOT EXISTS app_events_model_recent ON app_events (app, model, started_at);
CREATE INDEX IF NOT EXISTS app_events_unusual ON app_events (app, status, started_at) WHERE status != 'ok';
CREATE TABLE IF NOT EXISTS backend_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rollup_counts (
    app TEXT NOT NULL, grain TEXT NOT NULL, bucket TEXT NOT NULL,
    model TEXT NOT NULL, provider TEXT NOT NULL, status TEXT NOT NULL,
    events INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL, costs INTEGER NOT NULL, cost_usd REAL NOT NULL,
    PRIMARY KEY (app, grain, bucket, model, provider, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_latency (
    app TEXT NOT NULL, grain TEXT NOT NULL, bucket TEXT NOT NULL, latency_ms INTEGER NOT NULL,
    events INTEGER NOT NULL,
    PRIMARY KEY (app, grain, bucket, latency_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS app_sessions (
    app TEXT NOT NULL, session_id TEXT NOT NULL, turns INTEGER NOT NULL, first_at TEXT NOT NULL,
    last_at TEXT NOT NULL, total_tokens INTEGER NOT NULL, end_user_id TEXT,
    PRIMARY KEY (app, session_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS app_sessions_recent ON app_sessions (app, last_at);
"""

# Rollup grains: the length of the ``started_at`` prefix that names a bucket ("all": one bucket, '').
_HOUR, _DAY, _ALL = "h", "d", "a"
_GRAIN_CHARS = {_HOUR: 13, _DAY: 10, _ALL: 0}
_COUNT_GRAINS = (_HOUR, _DAY)
_LATENCY_GRAINS = (_HOUR, _DAY, _ALL)
_ROLLUPS_VERSION = b"1"

# Labels of absent dimensions, as every aggregate read shows them.
_LABELED = "COALESCE(model, '(unknown)') AS model, COALESCE(provider, '(unknown)') AS provider, " \
           "COALESCE(status, '(none)') AS status"  # fmt: skip

_UPSERT_COUNTS = """
INSERT INTO rollup_counts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (app, grain, bucket, model, provider, status) DO UPDATE SET
    events = events + excluded.events, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    total_tokens = total_tokens + excluded.total_tokens, costs = costs + excluded.costs,
    cost_usd = cost_usd + excluded.cost_usd
"""
_UPSERT_LATENCY = """
INSERT INTO rollup_latency VALUES (?, ?, ?, ?, ?)
ON CONFLICT (app, grain, bucket, latency_ms) DO UPDATE SET events = events + excluded.events
"""
# A NULL end user never replaces a known one; of two known ones the greater stays (what MAX() gives).
_UPSERT_SESSION = """
INSERT INTO app_sessions VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (app, session_id) DO UPDATE SET
    turns = turns + excluded.turns, first_at = min(first_at, excluded.first_at),
    last_at = max(last_at, excluded.last_at), total_tokens = total_tokens + excluded.total_tokens,
    end_user_id = CASE WHEN excluded.end_user_id IS NULL THEN end_user_id
                       WHEN end_user_id IS NULL THEN excluded.end_user_id
                       ELSE max(end_user_id, excluded.end_user_id) END
"""
# The same sums from the events themselves: an earlier version's database, opened by this one.
_REBUILD = [
    "DELETE FROM rollup_counts",
    "DELETE FROM rollup_latency",
    "DELETE FROM app_sessions",
    *(f"""INSERT INTO rollup_counts
          SELECT app, '{grain}', substr(started_at, 1, {chars}), {_LABELED}, COUNT(*), TOTAL(prompt_tokens),
                 TOTAL(completion_tokens), TOTAL(total_tokens), COUNT(cost_usd), TOTAL(cost_usd)
          FROM app_events GROUP BY 1, 2, 3, 4, 5, 6"""
      for grain, chars in ((_HOUR, 13), (_DAY, 10))),
    *(f"""INSERT INTO rollup_latency
          SELECT app, '{grain}', substr(started_at, 1, {chars}), latency_ms, COUNT(*)
          FROM app_events WHERE latency_ms IS NOT NULL GROUP BY 1, 2, 3, 4"""
      for grain, chars in ((_HOUR, 13), (_DAY, 10), (_ALL, 0))),
    """INSERT INTO app_sessions
       SELECT app, session_id, COUNT(*), MIN(started_at), MAX(started_at), TOTAL(total_tokens), MAX(end_user_id)
       FROM app_events WHERE session_id IS NOT NULL GROUP BY app, session_id""",
]

_STORED_COLUMNS = frozenset(_SCALAR_COLUMNS + _JSON_COLUMNS)


_ROW_FIELDS = _STORED_COLUMNS | {"request_id"}


def _id_hash(request_id: str) -> int:
    """``request_id`` as a signed 64-bit integer (BLAKE2b): the key of its App's uniqueness index."""
    return int.from_bytes(blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big", signed=True)


@lru_cache(maxsize=64)
def _insert_sql(columns: Tuple[str, ...]) -> str:
    """The INSERT of one set of present fields (request_id among them).

    Absent ones are left out rather than bound as NULL: the sqlite3 module
    looks each None up as a possible adapter (two failed attribute lookups).
    """
    return (f"INSERT INTO app_events (app, received_at, id_hash, {', '.join(columns)}) "
            f"VALUES ({', '.join('?' * (3 + len(columns)))})")  # fmt: skip


@lru_cache(maxsize=64)
def _only_row_fields(fields: Tuple[str, ...]) -> bool:
    return all(name in _ROW_FIELDS for name in fields)


def _rows_by_columns(events: Iterable[Tuple[Optional[int], Mapping[str, Any]]], app: str, received_at: str
                     ) -> Dict[Tuple[str, ...], List[tuple]]:
    """The (id hash, event) pairs as rows, grouped by the fields they have (an exporter's batch has one or two such sets).

    A stored form (``record.stored_form``) has only fields that are columns, so
    its values go in as they are, in its own order; anything else a caller
    adds is left out.
    """
    by_columns: Dict[Tuple[str, ...], List[tuple]] = {}
    for id_hash, event in events:
        columns = tuple(event)
        if not _only_row_fields(columns):
            columns = tuple(name for name in columns if name in _ROW_FIELDS)
            event = {name: event[name] for name in columns}
        if "metadata" in event or "spans" in event or "policy_hits" in event:
            event = {**event, **{name: _dump(event[name]) for name in _JSON_COLUMNS if name in event}}
        by_columns.setdefault(columns, []).append((app, received_at, id_hash, *event.values()))
    return by_columns


class BadCursor(ValueError):
    """A page cursor this store did not hand out."""


class StoreError(RuntimeError):
    """A write failed (its cause attached); none of the events it carried were stored."""


class _Write:
    """One insert() call waiting for a group commit."""

    __slots__ = ("events", "app", "accepted", "error", "done")

    def __init__(self, events: Sequence[Mapping[str, Any]], app: str) -> None:
        self.events, self.app = events, app
        self.accepted = 0
        self.error: Optional[BaseException] = None
        self.done = False


class EventStore:
    """The events table and its rollups. Thread-safe; ``path=":memory:"`` for throwaway stores."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        make_private_database(path)  # prompts and answers: the owner's alone, -wal and -shm too
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: List[_Write] = []  # at most one per request being worked on
        self._conn = self._connect()
        self._conn.executescript(_SCHEMA)
        self._hash_ids()
        self._readers = threading.local()
        self._reader_conns: List[sqlite3.Connection] = []
        self._closed = False
        self._ensure_rollups()
        self._written = threading.Event()  # set by each commit: the checkpointer has work
        self._stopping = threading.Event()
        self._checkpointing = threading.Lock()  # one checkpoint at a time: SQLite refuses a second one as busy
        self._checkpointer: Optional[threading.Thread] = None
        if path != ":memory:":
            self._conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self._conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints are the checkpointer's, off the commit path
            self._conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(self._connect(),),
                                                  name="backend-checkpoint", daemon=True)  # fmt: skip
            self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process; only power loss can drop the tail.
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _hash_ids(self) -> None:
        """Give an earlier version's events table (unique on the ids themselves) its ``id_hash`` column and index.

        Once, in one transaction: the rows are copied in ``seq`` order into a
        table of today's layout, which takes the old one's place (the console's
        cursors, made of ``seq``, stay valid); a hash already taken leaves the
        later id unhashed, as a write would.
        """
        old_columns = [row[1] for row in self._conn.execute("PRAGMA table_info(app_events)")]
        if "id_hash" in old_columns:
            return
        logger.warning("upgrading %s: request ids indexed by their hashes (once)", self.path)
        self._conn.create_function("pw_id_hash", 1, _id_hash, deterministic=True)
        names = ", ".join(old_columns)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in (
                f"CREATE TABLE app_events_hashed ({_EVENTS_TABLE})",
                f"INSERT OR IGNORE INTO app_events_hashed ({names}, id_hash) "
                f"SELECT {names}, pw_id_hash(request_id) FROM app_events ORDER BY seq",
                f"INSERT INTO app_events_hashed ({names}) SELECT {names} FROM app_events "
                f"WHERE seq NOT IN (SELECT seq FROM app_events_hashed)",
                "DROP TABLE app_events",
                "ALTER TABLE app_events_hashed RENAME TO app_events",
            ):  # fmt: skip
                self._conn.execute(statement)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.executescript(_SCHEMA)  # the indexes went with the old table

    def _ensure_rollups(self) -> None:
        """Rebuild the rollups from the events if this database has none yet (written by an earlier version)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM backend_meta WHERE name = 'rollups'").fetchone()
            if row is not None and bytes(row[0]) == _ROLLUPS_VERSION:
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _REBUILD:
                    self._conn.execute(statement)
                self._conn.execute("INSERT OR REPLACE INTO backend_meta VALUES ('rollups', ?)", (_ROLLUPS_VERSION,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def salt(self) -> bytes:
        """This database's secret for App labels: made once, kept with the data it labels."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM backend_meta WHERE name = 'app_salt'").fetchone()
            if row is None:
                self._conn.execute("INSERT INTO backend_meta VALUES ('app_salt', ?)", (os.urandom(32),))
                row = self._conn.execute("SELECT value FROM backend_meta WHERE name = 'app_salt'").fetchone()
            return bytes(row[0])

    def _checkpoint_loop(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL back into the database file while writes arrive; on this thread's own connection.

        PASSIVE checkpoints run beside the writer, which keeps committing into
        the WAL meanwhile; the WAL starts over at a commit that finds it all
        copied (steady writes may leave it no such moment: ``_commit`` bounds
        it then). A failed checkpoint is logged and tried again at the next
        round: the data is safe in the WAL meanwhile.
        """
        try:
            # Tested each round, not only after the pause: close() sets both events, and when that happens
            # between the pause and the clear() below, the clear() would take its wake-up away.
            while not self._stopping.is_set():
                self._written.wait()
                if self._stopping.wait(CHECKPOINT_EVERY_S):  # meanwhile commits gather: a page changed by several is copied once
                    break
                self._written.clear()
                try:
                    with self._checkpointing:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    logger.exception("WAL checkpoint failed (the data stays in the WAL; trying again later)")
        finally:
            conn.close()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._stopping.set()
            self._written.set()
            self._checkpointer.join()
        with self._lock:
            self._closed = True
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
            self._conn.close()

    def insert(self, events: Sequence[Mapping[str, Any]], app: str) -> int:
        """Store ``app``'s events, with their rollups, committed before this returns; how many were new.

        The rest were skipped: their ``request_id`` was stored before, or came
        earlier in ``events`` (the first write wins). Group commit: the thread
        that takes the writer's lock writes every batch waiting by then, in
        arrival order, in one transaction (one commit for several requests
        costs a fifth less per event than one each); if that transaction
        fails, every batch in it fails and nothing of them is stored.
        """
        write = _Write(events, app)
        with self._pending_lock:
            self._pending.append(write)
        with self._lock:
            if not write.done:
                with self._pending_lock:
                    group, self._pending = self._pending, []
                self._commit(group)
        if write.error is not None:
            raise StoreError("storing the events failed") from write.error
        return write.accepted

    def _commit(self, group: List["_Write"]) -> None:
        """Write ``group`` in one transaction (the caller holds the writer's lock) and mark each done."""
        received_at = format_timestamp(datetime.now(timezone.utc))
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            accepted = [self._insert_new(write.events, write.app, received_at) for write in group]
            self._conn.execute("COMMIT")
        except BaseException as exc:
            self._conn.execute("ROLLBACK")
            for write in group:
                write.error, write.done = exc, True
            return
        for write, count in zip(group, accepted):
            write.accepted, write.done = count, True
        self._written.set()
        if self._checkpointer is not None and _size(self.path + "-wal") > WAL_MAX_BYTES:
            try:  # rare (see _checkpoint_loop); the writers behind this one wait, as they did for every checkpoint
                with self._checkpointing:
                    self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            except sqlite3.Error:
                logger.exception("WAL checkpoint failed (the data stays in the WAL; trying again later)")

    def _insert_new(self, events: Sequence[Mapping[str, Any]], app: str, received_at: str) -> int:
        """Insert the events whose request_id this App has not stored (the first of an id in ``events`` wins),
        and their rollups; how many.

        The stored ids are looked up first, by their hashes, all in one query:
        SQLite probes the index in sorted order, which leaves the pages the
        inserts then change in its cache (inserting with ON CONFLICT DO NOTHING
        and no lookup measured ~3 µs per event more). A hash found with another
        id is a collision: the id is then looked for among the App's unhashed
        ids (there are none until the first collision), and stored unhashed
        if it is not there.
        """
        ids = [event["request_id"] for event in events]
        hashes = [_id_hash(request_id) for request_id in ids]
        owners: Dict[int, str] = dict(self._conn.execute(  # id hash -> the id stored with it
            f"SELECT id_hash, request_id FROM app_events WHERE app = ? AND id_hash IN ({', '.join('?' * len(hashes))})",
            (app, *hashes)).fetchall())  # fmt: skip
        unhashed: Optional[set] = None  # ids stored (or new here) with id_hash NULL: looked up at the first collision
        new: List[Tuple[Optional[int], Mapping[str, Any]]] = []
        for request_id, id_hash, event in zip(ids, hashes, events):
            owner = owners.get(id_hash)
            if owner is None:
                owners[id_hash] = request_id
                new.append((id_hash, event))
            elif owner != request_id:  # another id with this hash: this one is stored unhashed, once
                if unhashed is None:
                    unhashed = {row[0] for row in self._conn.execute(
                        f"SELECT request_id FROM app_events WHERE app = ? AND id_hash IS NULL AND request_id IN "
                        f"({', '.join('?' * len(ids))})", (app, *ids))}  # fmt: skip
                if request_id not in unhashed:
                    unhashed.add(request_id)
                    new.append((None, event))
        for columns, rows in _rows_by_columns(new, app, received_at).items():
            self._conn.executemany(_insert_sql(columns), rows)
        if new:
            counts, latencies, sessions = _rollups([event for _, event in new], app)
            self._conn.executemany(_UPSERT_COUNTS, counts)
            self._conn.executemany(_UPSERT_LATENCY, latencies)
            self._conn.executemany(_UPSERT_SESSION, sessions)
        return len(new)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection showing one snapshot for the whole ``with`` block.

        On a file, this thread's own connection, in a read transaction, without
        the writer's lock (WAL lets readers and the writer run side by side);
        for ``:memory:``, the writer's connection under its lock.
        """
        if self.path == ":memory:":
            with self._lock:
                yield self._conn
            return
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("the store is closed")
                conn = self._connect()
                self._reader_conns.append(conn)  # bounded by the server's worker threads
            self._readers.conn = conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> List[sqlite3.Row]:
        with self._reading() as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    def recent(
        self,
        app: Optional[str],
        limit: int = 50,
        cursor: Optional[str] = None,
        session_id: Optional[str] = None,
        end_user_id: Optional[str] = None,
        model: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        provider: Optional[str] = None,
        status: Optional[str] = None,
        use_case: Optional[str] = None,
    ) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """Newest first, one page, and the cursor of the next (None at the end).

        The admin (``app`` None) reads each App's page through its indexes and
        merges them (one ordering over all Apps has no index: it sorted every
        event, 5.9 s at 1.8M).

        ``metadata`` filters on top-level metadata keys, compared as text;
        each key must be a valid JSON path label (:func:`json_path`). A page
        filtered only on fields without an index (provider, use case, status
        ``ok``, metadata) reads at most :data:`SCAN_ROWS` events from its
        start: it may then hold fewer than ``limit`` events and still have a
        next cursor, which reads on from where this page stopped looking.
        """
        filters = dict(session_id=session_id, end_user_id=end_user_id, model=model, metadata=metadata,
                       provider=provider, status=status, use_case=use_case)  # fmt: skip
        position = _decode_cursor(cursor) if cursor is not None else None
        if app is not None:
            rows, more = self._recent_rows(app, limit, position, **filters)  # type: ignore[arg-type]
            return [event for _, event, _ in rows], _encode_position(more) if more else None
        pages = [self._recent_rows(name, limit, position, **filters) for name in self.apps()]  # type: ignore[arg-type]
        # Each App's page holds every one of its events from its start down to ``more`` (where it stopped
        # looking): events at or above the highest ``more`` of any App are complete across Apps.
        cut = max((more for _, more in pages if more is not None), default=None)
        merged = sorted((row for rows, _ in pages for row in rows if cut is None or row[0] >= cut),
                        key=lambda row: row[0], reverse=True)  # fmt: skip
        events: List[Dict[str, Any]] = []
        size = 0
        for index, (_, event, row_size) in enumerate(merged):
            if len(events) == limit or (events and size >= MAX_PAGE_BYTES):
                return events, _encode_position(merged[index - 1][0])
            events.append(event)
            size += row_size
        return events, _encode_position(cut) if cut is not None else None

    def _recent_rows(
        self, app: str, limit: int, position: Optional[Tuple[str, int]], session_id: Optional[str],
        end_user_id: Optional[str], model: Optional[str], metadata: Optional[Mapping[str, str]],
        provider: Optional[str], status: Optional[str], use_case: Optional[str],
    ) -> Tuple[List[Tuple[Tuple[str, int], Dict[str, Any], int]], Optional[Tuple[str, int]]]:  # fmt: skip
        """One App's page below ``position``: (position, event, size) rows, and where it stopped looking if not at the end."""
        where, params = _scope(app)
        if position is not None:
            started_at, seq = position
            # The plain range term lets SQLite seek the index to the cursor; it cannot seek on the OR.
            where.append("started_at <= ? AND (started_at < ? OR (started_at = ? AND seq < ?))")
            params.extend((started_at, started_at, started_at, seq))
        indexed = session_id or end_user_id or model or (status is not None and status != "ok")
        bound = None
        if not indexed and (provider or use_case or metadata or status is not None):
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            found = self._query(f"SELECT started_at, seq FROM app_events {clause} ORDER BY started_at DESC, seq DESC "
                                "LIMIT 1 OFFSET ?", (*params, SCAN_ROWS - 1))  # fmt: skip
            if found:
                bound = found[0]
                where.append("started_at >= ? AND (started_at > ? OR (started_at = ? AND seq >= ?))")
                params.extend((bound["started_at"], bound["started_at"], bound["started_at"], bound["seq"]))
        for column, value in (("session_id", session_id), ("end_user_id", end_user_id), ("model", model),
                              ("provider", provider), ("status", status), ("use_case", use_case)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if status is not None and status != "ok":
            where.append("status != 'ok'")  # the partial index's own condition, so SQLite may use it
        for key, value in (metadata or {}).items():
            where.append("CAST(json_extract(metadata, ?) AS TEXT) = ?")
            params.extend((json_path(key), value))
        sql = "SELECT * FROM app_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, seq DESC LIMIT ?"
        params.append(limit + 1)
        rows, more = self._page_rows(sql, params, limit)
        if bound is not None and more is None:  # stopped looking at the bound, not at the end
            more = (bound["started_at"], bound["seq"])
        return rows, more

    def session(
        self, app: Optional[str], session_id: str, limit: int = 1000, cursor: Optional[str] = None
    ) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """The turns of one conversation in the order they happened, for replay, one page at a time."""
        where, params = _scope(app)
        where.append("session_id = ?")
        params.append(session_id)
        if cursor is not None:
            started_at, seq = _decode_cursor(cursor)
            where.append("started_at >= ? AND (started_at > ? OR (started_at = ? AND seq > ?))")
            params.extend((started_at, started_at, started_at, seq))
        sql = f"SELECT * FROM app_events WHERE {' AND '.join(where)} ORDER BY started_at ASC, seq ASC LIMIT ?"
        params.append(limit + 1)
        return self._page(sql, params, limit)

    def event(self, app: Optional[str], request_id: str) -> Optional[Dict[str, Any]]:
        """One stored event by its ``request_id`` within ``app`` (the admin: the newest of that id in any App).

        The admin looks in each App through ``(app, id_hash)``: no index has the id alone.
        """
        sql = ("SELECT * FROM app_events WHERE app = ? AND id_hash = ? AND request_id = ? UNION ALL "
               "SELECT * FROM app_events WHERE app = ? AND id_hash IS NULL AND request_id = ?")  # fmt: skip
        id_hash = _id_hash(request_id)
        rows = [row for name in ([app] if app is not None else self.apps())
                for row in self._query(sql, (name, id_hash, request_id, name, request_id))]
        return _event_from_row(max(rows, key=lambda row: row["seq"])) if rows else None

    def apps(self) -> List[str]:
        """The Apps that have events, by name (the admin's App picker)."""
        return [row[0] for row in self._query(f"SELECT DISTINCT app FROM rollup_counts WHERE grain = '{_DAY}' ORDER BY app")]

    def overview(self, app: Optional[str], since: Optional[str], bucket_chars: int) -> Dict[str, Any]:
        """The Observability page's figures for events started at or after ``since`` (None: all).

        ``bucket_chars`` is how much of ``started_at`` names a chart bucket
        (16: the minute, 13: the hour, 10: the day). Latency percentiles are
        nearest-rank over the events that carry a latency.
        """
        window = _Window(app, since)
        with self._reading() as conn:
            groups = conn.execute(
                f"""SELECT model, provider, status, SUM(events), TOTAL(prompt_tokens), TOTAL(completion_tokens),
                           TOTAL(total_tokens), SUM(costs), TOTAL(cost_usd)
                    FROM ({window.counts()}) GROUP BY 1, 2, 3""", window.params).fetchall()  # fmt: skip
            latencies = conn.execute(
                f"SELECT latency_ms, SUM(events) FROM ({window.latencies()}) GROUP BY 1 ORDER BY 1",
                window.params).fetchall()  # fmt: skip
            series_sql, series_params = window.series(bucket_chars)
            series = [_exact(dict(row)) for row in conn.execute(
                f"""SELECT bucket, SUM(events) AS events, TOTAL(total_tokens) AS total_tokens
                    FROM ({series_sql}) GROUP BY 1 ORDER BY 1""", series_params)]  # fmt: skip
        names = ("events", "prompt_tokens", "completion_tokens", "total_tokens", "costs", "llm_cost_usd")
        totals: Dict[str, Any] = dict.fromkeys(names, 0)
        totals["errors"] = 0
        by_pair: Dict[Tuple[str, str], Dict[str, Any]] = {}
        decisions: Dict[str, int] = {}
        for model, provider, status, *sums in groups:
            pair = by_pair.setdefault((model, provider), {"model": model, "provider": provider, **dict.fromkeys(names, 0),
                                                          "errors": 0})  # fmt: skip
            for target in (totals, pair):
                for name, value in zip(names, sums):
                    target[name] += value
                if status == "error":
                    target["errors"] += sums[0]
            decisions[status] = decisions.get(status, 0) + sums[0]
        for row in (totals, *by_pair.values()):
            if not row.pop("costs"):
                row["llm_cost_usd"] = None
            _with_credit(_exact(row))
        by_model = sorted(by_pair.values(), key=lambda row: (-row["total_tokens"], -row["events"]))
        percentiles = _percentiles(latencies, {"p50_ms": 50, "p95_ms": 95})
        return {**totals, **percentiles, "by_model": by_model, "decisions": decisions, "series": series}

    def _page(self, sql: str, params: List[Any], limit: int) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        rows, more = self._page_rows(sql, params, limit)
        return [event for _, event, _ in rows], _encode_position(more) if more else None

    def _page_rows(self, sql: str, params: List[Any], limit: int
                   ) -> Tuple[List[Tuple[Tuple[str, int], Dict[str, Any], int]], Optional[Tuple[str, int]]]:  # fmt: skip
        """Up to ``limit`` rows (position, event, size), bounded in bytes, and the last one's position if more follow."""
        found: List[Tuple[Tuple[str, int], Dict[str, Any], int]] = []
        total = 0
        more: Optional[Tuple[str, int]] = None
        with self._reading() as conn:
            rows = conn.execute(sql, tuple(params))
            for row in rows:
                if len(found) == limit or (found and total >= MAX_PAGE_BYTES):
                    more = found[-1][0]
                    break
                size = sum(len(v) for v in (row["prompt"], row["answer"], *(row[c] for c in _JSON_COLUMNS)) if v) + 1024
                found.append(((row["started_at"], row["seq"]), _event_from_row(row), size))
                total += size
            rows.close()
        return found, more

    def sessions(self, app: Optional[str], limit: int = 50) -> List[Dict[str, Any]]:
        """Conversations, most recently active first, with their totals (from ``app_sessions``)."""
        if app is not None:
            rows = self._query(
                """SELECT session_id, turns, first_at, last_at, total_tokens, end_user_id FROM app_sessions
                   WHERE app = ? ORDER BY last_at DESC LIMIT ?""", (app, limit))  # fmt: skip
        else:  # the admin: one row per session id, whichever Apps used it
            rows = self._query(
                """SELECT session_id, SUM(turns) AS turns, MIN(first_at) AS first_at, MAX(last_at) AS last_at,
                          TOTAL(total_tokens) AS total_tokens, MAX(end_user_id) AS end_user_id
                   FROM app_sessions GROUP BY session_id ORDER BY last_at DESC LIMIT ?""", (limit,))  # fmt: skip
        return [_exact(dict(row)) for row in rows]

    def billing(self, app: Optional[str]) -> Dict[str, Any]:
        """Tokens and Events-mode credit, overall, by model and by UTC day (from the daily rollups)."""
        where, params = _scope(app)
        where.append(f"grain = '{_DAY}'")

        def breakdown(conn: sqlite3.Connection, column_sql: str, label: str) -> List[Dict[str, Any]]:
            rows = conn.execute(
                f"""
                SELECT {column_sql} AS {label}, SUM(events) AS events,
                       TOTAL(prompt_tokens) AS prompt_tokens,
                       TOTAL(completion_tokens) AS completion_tokens,
                       TOTAL(total_tokens) AS total_tokens,
                       CASE WHEN SUM(costs) THEN TOTAL(cost_usd) END AS llm_cost_usd
                FROM rollup_counts WHERE {' AND '.join(where)} GROUP BY 1 ORDER BY 1
                """,
                params,
            )
            return [_with_credit(_exact(dict(row))) for row in rows]

        with self._reading() as conn:
            totals = breakdown(conn, "'all'", "scope")
            by_model = breakdown(conn, "model", "model")
            by_day = breakdown(conn, "bucket", "day")
        overall = totals[0] if totals and totals[0]["events"] else _with_credit(
            {"events": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "llm_cost_usd": None}
        )
        overall.pop("scope", None)
        return {"rate_usd_per_million_tokens": CREDIT_USD_PER_MILLION_TOKENS, **overall, "by_model": by_model,
                "by_day": by_day}  # fmt: skip


class _Window:
    """Events started at or after ``since`` (None: all) as the union of the cheapest sources.

    With a ``since``, the partial hour [since, H) comes from ``app_events``
    (its index on ``started_at``), whole hours [H, D) from the hourly rollups,
    and days from D on from the daily ones, where H is the first hour
    boundary at or after ``since`` and D the first day boundary at or after H.
    Rollup buckets are ``started_at`` prefixes and these bounds compare as
    strings, so the three parts are disjoint and cover exactly the rows a
    ``started_at >= since`` scan reads.
    """

    def __init__(self, app: Optional[str], since: Optional[str]) -> None:
        self.since = since
        self._app = ["app = ?"] if app is not None else []
        self._app_param: List[Any] = [app] if app is not None else []
        if since is None:
            self.params = list(self._app_param)
            return
        moment = parse_timestamp(since)
        if moment is None:
            raise ValueError(f"not a timestamp: {since!r}")
        hour = moment.replace(minute=0, second=0, microsecond=0)
        hour += timedelta(hours=1) if hour < moment else timedelta(0)  # a window starting on the hour: no raw part
        day = hour.replace(hour=0)
        day += timedelta(days=1) if day < hour else timedelta(0)
        self.hour, self.day = format_timestamp(hour)[:13], format_timestamp(day)[:10]
        # The three parts' parameters, in the order the parts appear in counts() and latencies().
        self.params = [*self._app_param, since, self.hour, *self._app_param, self.hour, self.day,
                       *self._app_param, self.day]  # fmt: skip
        self._raw, self._hours, self._days = (
            " AND ".join(self._app + ["started_at >= ?", "started_at < ?"]),
            " AND ".join(self._app + [f"grain = '{_HOUR}'", "bucket >= ?", "bucket < ?"]),
            " AND ".join(self._app + [f"grain = '{_DAY}'", "bucket >= ?"]),
        )

    def counts(self) -> str:
        """Rows of (model, provider, status, events, token sums, costs, cost_usd) whose sums are the window's."""
        rollup = ("SELECT model, provider, status, events, prompt_tokens, completion_tokens, total_tokens, costs, "
                  "cost_usd FROM rollup_counts WHERE ")  # fmt: skip
        if self.since is None:
            return rollup + " AND ".join(self._app + [f"grain = '{_DAY}'"])
        raw = (f"SELECT {_LABELED}, 1 AS events, prompt_tokens, completion_tokens, total_tokens, "
               f"cost_usd IS NOT NULL AS costs, cost_usd "
               f"FROM app_events WHERE {self._raw}")  # fmt: skip
        return f"{raw} UNION ALL {rollup}{self._hours} UNION ALL {rollup}{self._days}"

    def latencies(self) -> str:
        """Rows of (latency_ms, events) whose sums per latency are the window's histogram."""
        rollup = "SELECT latency_ms, events FROM rollup_latency WHERE "
        if self.since is None:
            return rollup + " AND ".join(self._app + [f"grain = '{_ALL}'"])
        return (f"SELECT latency_ms, 1 AS events FROM app_events WHERE {self._raw} AND latency_ms IS NOT NULL "
                f"UNION ALL {rollup}{self._hours} UNION ALL {rollup}{self._days}")  # fmt: skip

    def series(self, bucket_chars: int) -> Tuple[str, List[Any]]:
        """Rows of (bucket, events, total_tokens) per ``bucket_chars`` prefix of ``started_at``, and their params.

        Rollups serve buckets no finer than theirs: days from the daily ones,
        hours from the hourly ones; minutes come from the events.
        """
        chars = int(bucket_chars)
        raw = f"SELECT substr(started_at, 1, {chars}) AS bucket, 1 AS events, total_tokens FROM app_events WHERE "
        if chars > _GRAIN_CHARS[_HOUR]:
            if self.since is None:
                return raw + " AND ".join(self._app + ["1"]), list(self._app_param)
            return raw + " AND ".join(self._app + ["started_at >= ?"]), [*self._app_param, self.since]
        grain = _DAY if chars <= _GRAIN_CHARS[_DAY] and self.since is None else _HOUR
        rollup = (f"SELECT substr(bucket, 1, {chars}) AS bucket, events, total_tokens FROM rollup_counts "
                  f"WHERE {' AND '.join(self._app + [f'grain = {grain!r}'])}")  # fmt: skip
        if self.since is None:
            return rollup, list(self._app_param)
        return (f"{raw}{self._raw} UNION ALL {rollup} AND bucket >= ?",
                [*self._app_param, self.since, self.hour, *self._app_param, self.hour])  # fmt: skip


def _rollups(events: Sequence[Mapping[str, Any]], app: str) -> Tuple[List[tuple], List[tuple], List[tuple]]:
    """The rollup rows (counts, latencies, sessions) that ``events`` add, one per key, summed in Python first."""
    counts: Dict[tuple, List[Any]] = {}
    latencies: Dict[tuple, int] = {}
    sessions: Dict[str, List[Any]] = {}
    for event in events:
        started_at = event["started_at"]
        get = event.get
        model, provider, status = get("model"), get("provider"), get("status")
        dimensions = (
            "(unknown)" if model is None else model, "(unknown)" if provider is None else provider,
            "(none)" if status is None else status,
        )  # fmt: skip
        prompt, completion, total, cost = get("prompt_tokens"), get("completion_tokens"), get("total_tokens"), get("cost_usd")
        for grain in _COUNT_GRAINS:
            key = (grain, started_at[: _GRAIN_CHARS[grain]], *dimensions)
            sums = counts.get(key)
            if sums is None:
                sums = counts[key] = [0, 0, 0, 0, 0, 0.0]
            sums[0] += 1
            sums[1] += prompt or 0
            sums[2] += completion or 0
            sums[3] += total or 0
            if cost is not None:
                sums[4] += 1
                sums[5] += cost
        latency = get("latency_ms")
        if latency is not None:
            for grain in _LATENCY_GRAINS:
                key = (grain, started_at[: _GRAIN_CHARS[grain]], latency)
                latencies[key] = latencies.get(key, 0) + 1
        session_id = get("session_id")
        if session_id is not None:
            session = sessions.get(session_id)
            end_user = get("end_user_id")
            if session is None:
                sessions[session_id] = [1, started_at, started_at, total or 0, end_user]
            else:
                session[0] += 1
                session[1] = min(session[1], started_at)
                session[2] = max(session[2], started_at)
                session[3] += total or 0
                if end_user is not None and (session[4] is None or end_user > session[4]):
                    session[4] = end_user
    return ([(app, *key, *sums) for key, sums in counts.items()],
            [(app, *key, n) for key, n in latencies.items()],
            [(app, session_id, *values) for session_id, values in sessions.items()])  # fmt: skip


def _percentiles(histogram: Sequence[Tuple[int, int]], wanted: Mapping[str, int]) -> Dict[str, Optional[int]]:
    """Nearest-rank percentiles (the value at rank ceil(n × p / 100)) from (value, count) rows in value order."""
    n = sum(count for _, count in histogram)
    found: Dict[str, Optional[int]] = {}
    for name, percent in wanted.items():
        rank, seen, found[name] = max(1, -(-n * percent // 100)), 0, None
        for value, count in histogram if n else ():
            seen += count
            if seen >= rank:
                found[name] = value
                break
    return found


def _scope(app: Optional[str]) -> Tuple[List[str], List[Any]]:
    return (["app = ?"], [app]) if app is not None else ([], [])


def _exact(row: Dict[str, Any]) -> Dict[str, Any]:
    """TOTAL() is a float: token sums go back to integers while floats hold them exactly."""
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = row.get(name)
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            row[name] = int(value)
    return row


def _encode_position(position: Tuple[str, int]) -> str:
    raw = orjson.dumps(list(position))
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> Tuple[str, int]:
    try:
        started_at, seq = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(started_at, str) and isinstance(seq, int) and not isinstance(seq, bool):
            return started_at, seq
    except (ValueError, TypeError):
        pass
    raise BadCursor("invalid cursor")


def _with_credit(row: Dict[str, Any]) -> Dict[str, Any]:
    row["credit_usd"] = round(row["total_tokens"] * CREDIT_USD_PER_MILLION_TOKENS / 1_000_000, 6)
    return row


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _dump(value: Any) -> Optional[str]:
    # Values passed checks.storage_errors: finite, valid Unicode, 64-bit integers, shallow.
    return None if value is None else orjson.dumps(value).decode("utf-8")


def json_path(key: str) -> str:
    """SQLite's JSON path to a top-level metadata key; ValueError if no path can name it.

    SQLite's quoted path labels end at the next double quote and know no
    escapes, and its C strings end at NUL: such keys cannot be filtered on.
    """
    if not key or len(key) > 256 or '"' in key or any(ord(ch) < 0x20 for ch in key):
        raise ValueError("metadata filter keys are 1..256 characters without double quotes or control characters")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("metadata filter keys must be valid Unicode") from None
    return '$."' + key + '"'


def _event_from_row(row: sqlite3.Row) -> Dict[str, Any]:
    event: Dict[str, Any] = {"request_id": row["request_id"]}
    for name in _SCALAR_COLUMNS:
        if row[name] is not None:
            event[name] = row[name]
    for name in _JSON_COLUMNS:
        if row[name] is not None:
            event[name] = orjson.loads(row[name])
    event["received_at"] = row["received_at"]
    event["app"] = row["app"]
    return event
