"""SQLite storage of the local backend: idempotent writes, the console's reads, per App.

One connection behind one lock: SQLite serialises writers anyway, the lock
makes ``:memory:`` databases shareable across request threads, and every
write is committed before the HTTP response leaves.

Invariants: every row belongs to one App, ``request_id`` is unique within
its App (not across Apps), and every read names the App it reads (``None``
only for the admin, who reads all). Sums use ``TOTAL()``, which cannot
overflow. Reads are bounded in rows and in bytes (:data:`MAX_PAGE_BYTES`),
and pages continue from an opaque cursor.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import orjson

from ..record import format_timestamp

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

MAX_PAGE_BYTES = 8 * 1024 * 1024
"""A read stops adding events once its reply passes this size (one event always fits: see checks.py)."""

# ``app_events``, not ``events``: a database written before Apps existed keeps its old table untouched.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS app_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    request_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    {", ".join(f"{name} {'INTEGER' if name.endswith(('_tokens', '_ms')) else 'REAL' if name in ('cost_usd', 'risk_score') else 'TEXT'}" for name in _SCALAR_COLUMNS)},
    {", ".join(f"{name} TEXT" for name in _JSON_COLUMNS)},
    UNIQUE (app, request_id)
);
CREATE INDEX IF NOT EXISTS app_events_started ON app_events (app, started_at, seq);
CREATE INDEX IF NOT EXISTS app_events_session ON app_events (app, session_id, started_at);
CREATE INDEX IF NOT EXISTS app_events_user ON app_events (app, end_user_id);
CREATE INDEX IF NOT EXISTS app_events_model ON app_events (app, model);
CREATE TABLE IF NOT EXISTS backend_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

_INSERT = (
    "INSERT OR IGNORE INTO app_events (app, request_id, received_at, "
    + ", ".join(_SCALAR_COLUMNS + _JSON_COLUMNS)
    + ") VALUES ("
    + ", ".join("?" * (3 + len(_SCALAR_COLUMNS) + len(_JSON_COLUMNS)))
    + ")"
)


class BadCursor(ValueError):
    """A page cursor this store did not hand out."""


class EventStore:
    """The events table. Thread-safe; ``path=":memory:"`` for throwaway stores."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process; only power loss can drop the tail.
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)

    def salt(self) -> bytes:
        """This database's secret for App labels: made once, kept with the data it labels."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM backend_meta WHERE name = 'app_salt'").fetchone()
            if row is None:
                self._conn.execute("INSERT INTO backend_meta VALUES ('app_salt', ?)", (os.urandom(32),))
                row = self._conn.execute("SELECT value FROM backend_meta WHERE name = 'app_salt'").fetchone()
            return bytes(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def insert(self, events: Sequence[Mapping[str, Any]], app: str) -> int:
        """Store ``app``'s events in one transaction; how many were new (the rest: ids already stored)."""
        received_at = format_timestamp(datetime.now(timezone.utc))
        rows = [
            (app, event["request_id"], received_at, *map(event.get, _SCALAR_COLUMNS),
             *(_dump(event.get(name)) for name in _JSON_COLUMNS))
            for event in events
        ]  # fmt: skip
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                before = self._conn.total_changes
                self._conn.executemany(_INSERT, rows)
                accepted = self._conn.total_changes - before
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return accepted

    def _query(self, sql: str, params: Iterable[Any] = ()) -> List[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

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

        ``metadata`` filters on top-level metadata keys, compared as text;
        each key must be a valid JSON path label (:func:`json_path`).
        """
        where, params = _scope(app)
        for column, value in (("session_id", session_id), ("end_user_id", end_user_id), ("model", model),
                              ("provider", provider), ("status", status), ("use_case", use_case)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        for key, value in (metadata or {}).items():
            where.append("CAST(json_extract(metadata, ?) AS TEXT) = ?")
            params.extend((json_path(key), value))
        if cursor is not None:
            started_at, seq = _decode_cursor(cursor)
            where.append("(started_at < ? OR (started_at = ? AND seq < ?))")
            params.extend((started_at, started_at, seq))
        sql = "SELECT * FROM app_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, seq DESC LIMIT ?"
        params.append(limit + 1)
        return self._page(sql, params, limit)

    def session(
        self, app: Optional[str], session_id: str, limit: int = 1000, cursor: Optional[str] = None
    ) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """The turns of one conversation in the order they happened, for replay, one page at a time."""
        where, params = _scope(app)
        where.append("session_id = ?")
        params.append(session_id)
        if cursor is not None:
            started_at, seq = _decode_cursor(cursor)
            where.append("(started_at > ? OR (started_at = ? AND seq > ?))")
            params.extend((started_at, started_at, seq))
        sql = f"SELECT * FROM app_events WHERE {' AND '.join(where)} ORDER BY started_at ASC, seq ASC LIMIT ?"
        params.append(limit + 1)
        return self._page(sql, params, limit)

    def event(self, app: Optional[str], request_id: str) -> Optional[Dict[str, Any]]:
        """One stored event by its ``request_id`` within ``app`` (the admin: the newest of that id in any App)."""
        where, params = _scope(app)
        where.append("request_id = ?")
        params.append(request_id)
        rows = self._query(f"SELECT * FROM app_events WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT 1", params)
        return _event_from_row(rows[0]) if rows else None

    def apps(self) -> List[str]:
        """The Apps that have events, by name (the admin's App picker)."""
        return [row[0] for row in self._query("SELECT DISTINCT app FROM app_events ORDER BY app")]

    def overview(self, app: Optional[str], since: Optional[str], bucket_chars: int) -> Dict[str, Any]:
        """The Observability page's figures for events started at or after ``since`` (None: all).

        ``bucket_chars`` is how much of ``started_at`` names a chart bucket
        (13: the hour, 10: the day). Latency percentiles are nearest-rank over
        the events that carry a latency.
        """
        where, params = _scope(app)
        if since is not None:
            where.append("started_at >= ?")
            params.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        # Each pass over the rows costs about as much as reading them all (~1.7 s at 1M events here):
        # one grouped pass gives the totals, the decisions and the breakdown, one more the latencies.
        groups = self._query(
            f"""SELECT COALESCE(model, '(unknown)'), COALESCE(provider, '(unknown)'), COALESCE(status, '(none)'),
                       COUNT(*), TOTAL(prompt_tokens), TOTAL(completion_tokens), TOTAL(total_tokens),
                       COUNT(cost_usd), TOTAL(cost_usd)
                FROM app_events {clause} GROUP BY 1, 2, 3""", params)  # fmt: skip
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
        latencies = self._query(
            f"SELECT latency_ms, COUNT(*) FROM app_events WHERE {' AND '.join([*where, 'latency_ms IS NOT NULL'])} "
            "GROUP BY 1 ORDER BY 1", params)  # fmt: skip
        percentiles = _percentiles(latencies, {"p50_ms": 50, "p95_ms": 95})
        series = [_exact(dict(row)) for row in self._query(
            f"""SELECT substr(started_at, 1, ?) AS bucket, COUNT(*) AS events, TOTAL(total_tokens) AS total_tokens
                FROM app_events {clause} GROUP BY 1 ORDER BY 1""", (bucket_chars, *params))]
        return {**totals, **percentiles, "by_model": by_model, "decisions": decisions, "series": series}

    def _page(self, sql: str, params: List[Any], limit: int) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        events: List[Dict[str, Any]] = []
        size = 0
        next_cursor: Optional[str] = None
        with self._lock:
            rows = self._conn.execute(sql, tuple(params))
            last: Optional[sqlite3.Row] = None
            for row in rows:
                if len(events) == limit or (events and size >= MAX_PAGE_BYTES):
                    next_cursor = _encode_cursor(last)  # type: ignore[arg-type]
                    break
                event = _event_from_row(row)
                size += sum(len(v) for v in (row["prompt"], row["answer"], *(row[c] for c in _JSON_COLUMNS)) if v) + 1024
                events.append(event)
                last = row
            rows.close()
        return events, next_cursor

    def sessions(self, app: Optional[str], limit: int = 50) -> List[Dict[str, Any]]:
        """Conversations, most recently active first, with their totals."""
        where, params = _scope(app)
        where.append("session_id IS NOT NULL")
        rows = self._query(
            f"""
            SELECT session_id, COUNT(*) AS turns, MIN(started_at) AS first_at,
                   MAX(started_at) AS last_at, TOTAL(total_tokens) AS total_tokens,
                   MAX(end_user_id) AS end_user_id
            FROM app_events WHERE {' AND '.join(where)}
            GROUP BY session_id ORDER BY last_at DESC LIMIT ?
            """,
            (*params, limit),
        )
        return [_exact(dict(row)) for row in rows]

    def billing(self, app: Optional[str]) -> Dict[str, Any]:
        """Tokens and Events-mode credit, overall, by model and by UTC day."""
        where, params = _scope(app)
        clause = f"WHERE {' AND '.join(where)}" if where else ""

        def breakdown(column_sql: str, label: str) -> List[Dict[str, Any]]:
            rows = self._query(
                f"""
                SELECT {column_sql} AS {label}, COUNT(*) AS events,
                       TOTAL(prompt_tokens) AS prompt_tokens,
                       TOTAL(completion_tokens) AS completion_tokens,
                       TOTAL(total_tokens) AS total_tokens,
                       CASE WHEN COUNT(cost_usd) THEN TOTAL(cost_usd) END AS llm_cost_usd
                FROM app_events {clause} GROUP BY 1 ORDER BY 1
                """,
                params,
            )
            return [_with_credit(_exact(dict(row))) for row in rows]

        totals = breakdown("'all'", "scope")
        overall = totals[0] if totals and totals[0]["events"] else _with_credit(
            {"events": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "llm_cost_usd": None}
        )
        overall.pop("scope", None)
        return {
            "rate_usd_per_million_tokens": CREDIT_USD_PER_MILLION_TOKENS,
            **overall,
            "by_model": breakdown("COALESCE(model, '(unknown)')", "model"),
            "by_day": breakdown("substr(started_at, 1, 10)", "day"),
        }


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


def _encode_cursor(row: sqlite3.Row) -> str:
    raw = orjson.dumps([row["started_at"], row["seq"]])
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
