"""SQLite storage of the local backend: idempotent writes, the console's reads.

One connection behind one lock: SQLite serialises writers anyway, the lock
makes ``:memory:`` databases shareable across request threads, and every
write is committed before the HTTP response leaves.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

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

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL,
    key_fingerprint TEXT,
    {", ".join(f"{name} {'INTEGER' if name.endswith(('_tokens', '_ms')) else 'REAL' if name in ('cost_usd', 'risk_score') else 'TEXT'}" for name in _SCALAR_COLUMNS)},
    {", ".join(f"{name} TEXT" for name in _JSON_COLUMNS)}
);
CREATE INDEX IF NOT EXISTS events_started ON events (started_at);
CREATE INDEX IF NOT EXISTS events_session ON events (session_id, started_at);
CREATE INDEX IF NOT EXISTS events_user ON events (end_user_id);
CREATE INDEX IF NOT EXISTS events_model ON events (model);
"""

_INSERT = (
    "INSERT OR IGNORE INTO events (request_id, received_at, key_fingerprint, "
    + ", ".join(_SCALAR_COLUMNS + _JSON_COLUMNS)
    + ") VALUES ("
    + ", ".join("?" * (3 + len(_SCALAR_COLUMNS) + len(_JSON_COLUMNS)))
    + ")"
)


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

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def insert(self, events: Sequence[Mapping[str, Any]], key_fingerprint: Optional[str] = None) -> List[bool]:
        """Store events in one transaction; per event True if new, False if its id was already stored."""
        received_at = format_timestamp(datetime.now(timezone.utc))
        outcomes: List[bool] = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for event in events:
                    row = (
                        event["request_id"],
                        received_at,
                        key_fingerprint,
                        *(event.get(name) for name in _SCALAR_COLUMNS),
                        *(_dump(event.get(name)) for name in _JSON_COLUMNS),
                    )
                    outcomes.append(self._conn.execute(_INSERT, row).rowcount == 1)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return outcomes

    def _query(self, sql: str, params: Iterable[Any] = ()) -> List[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def recent(
        self,
        limit: int = 50,
        session_id: Optional[str] = None,
        end_user_id: Optional[str] = None,
        model: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> List[Dict[str, Any]]:
        """Newest first; ``metadata`` filters on top-level metadata keys, compared as text."""
        where: List[str] = []
        params: List[Any] = []
        for column, value in (("session_id", session_id), ("end_user_id", end_user_id), ("model", model)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        for key, value in (metadata or {}).items():
            where.append("CAST(json_extract(metadata, ?) AS TEXT) = ?")
            params.extend((_json_path(key), value))
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, seq DESC LIMIT ?"
        params.append(limit)
        return [_event_from_row(row) for row in self._query(sql, params)]

    def sessions(self, limit: int = 50) -> List[Dict[str, Any]]:
        """Conversations, most recently active first, with their totals."""
        rows = self._query(
            """
            SELECT session_id, COUNT(*) AS turns, MIN(started_at) AS first_at,
                   MAX(started_at) AS last_at, COALESCE(SUM(total_tokens), 0) AS total_tokens,
                   MAX(end_user_id) AS end_user_id
            FROM events WHERE session_id IS NOT NULL
            GROUP BY session_id ORDER BY last_at DESC LIMIT ?
            """,
            (limit,),
        )
        return [dict(row) for row in rows]

    def session(self, session_id: str) -> List[Dict[str, Any]]:
        """The turns of one conversation in the order they happened, for replay."""
        rows = self._query(
            "SELECT * FROM events WHERE session_id = ? ORDER BY started_at ASC, seq ASC", (session_id,)
        )
        return [_event_from_row(row) for row in rows]

    def billing(self) -> Dict[str, Any]:
        """Tokens and Events-mode credit, overall, by model and by UTC day."""

        def breakdown(column_sql: str, label: str) -> List[Dict[str, Any]]:
            rows = self._query(
                f"""
                SELECT {column_sql} AS {label}, COUNT(*) AS events,
                       COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens,
                       COALESCE(SUM(completion_tokens), 0) AS completion_tokens,
                       COALESCE(SUM(total_tokens), 0) AS total_tokens,
                       SUM(cost_usd) AS llm_cost_usd
                FROM events GROUP BY 1 ORDER BY 1
                """
            )
            return [_with_credit(dict(row)) for row in rows]

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


def _with_credit(row: Dict[str, Any]) -> Dict[str, Any]:
    row["credit_usd"] = round(row["total_tokens"] * CREDIT_USD_PER_MILLION_TOKENS / 1_000_000, 6)
    return row


def _dump(value: Any) -> Optional[str]:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _event_from_row(row: sqlite3.Row) -> Dict[str, Any]:
    event: Dict[str, Any] = {"request_id": row["request_id"]}
    for name in _SCALAR_COLUMNS:
        if row[name] is not None:
            event[name] = row[name]
    for name in _JSON_COLUMNS:
        if row[name] is not None:
            event[name] = json.loads(row[name])
    event["received_at"] = row["received_at"]
    if row["key_fingerprint"]:
        event["key_fingerprint"] = row["key_fingerprint"]
    return event
