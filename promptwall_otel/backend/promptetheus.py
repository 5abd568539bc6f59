"""The local backend's Promptetheus-compatible API: agent runs as traces, their ordered events, artifacts.

Promptetheus (see ``docs/promptetheus.md``) traces agent runs: one trace per
run, then its events and artifacts. The local backend answers the same routes
so that the embedded default and the tests talk to a real server:

=========================================  =====================================================
``POST /api/traces``                       ``{id, agent, project_id?, user_goal?}``: 201 and the
                                           trace; the same ``id`` again: 409 (already there)
``POST /api/traces/{id}/events``           ``{"events": [...]}``, 1..500: 200, 207 or 400 with
                                           ``accepted``/``skipped``/``rejected`` as ``/v1/events``;
                                           unknown trace: 404
``POST /api/traces/{id}/artifacts``        raw bytes, ``X-Promptetheus-Filename`` and
                                           ``X-Promptetheus-Artifact-Type``: 201 ``{id, size}``
``GET /api/traces``                        the App's traces, newest first (``limit``)
``GET /api/traces/{id}``                   the trace, a page of its events in ``seq`` order
                                           (``limit``, ``cursor``), its artifacts
``GET /api/traces/{id}/artifacts/{n}``     one artifact's bytes, as uploaded
=========================================  =====================================================

Invariants: keys are Apps, exactly as for ``/v1/events`` (``apps``), and every
row and read is scoped to the caller's App; an event's ``idempotency_key`` is
unique within its trace, so a replayed event is skipped, never stored twice;
what is stored can always be read back (``checks.storage_errors``, sizes
capped); a request is validated whole before anything is written.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, unquote

import orjson

from ..private_files import make_private_database
from ..record import format_timestamp, parse_timestamp
from ..serving import HttpError
from ..webserver import Request, Response, json_response
from .apps import Caller
from .checks import MAX_COUNT, MAX_JSON_BYTES, MAX_TEXT_CHARS, storage_errors

PREFIX = "/api/traces"
MAX_EVENTS = 500
MAX_ARTIFACT_BYTES = 8 * 1024 * 1024
MAX_ID_CHARS = 256
_LIST_LIMIT_MAX = 1000
MAX_PAGE_BYTES = 8 * 1024 * 1024
"""A trace read stops adding events once their payloads pass this size (one event always fits)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pt_traces (
    app TEXT NOT NULL, id TEXT NOT NULL, agent TEXT, project_id TEXT, user_goal TEXT,
    created_at TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (app, id)
);
CREATE INDEX IF NOT EXISTS pt_traces_recent ON pt_traces (app, seq);
CREATE TABLE IF NOT EXISTS pt_events (
    app TEXT NOT NULL, trace_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, session_id TEXT, timestamp TEXT NOT NULL, payload TEXT NOT NULL, received INTEGER NOT NULL,
    PRIMARY KEY (app, trace_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS pt_events_order ON pt_events (app, trace_id, seq, received);
CREATE TABLE IF NOT EXISTS pt_artifacts (
    app TEXT NOT NULL, trace_id TEXT NOT NULL, n INTEGER NOT NULL, filename TEXT, artifact_type TEXT,
    content_type TEXT, size INTEGER NOT NULL, data BLOB NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (app, trace_id, n)
);
"""


class TraceStore:
    """Promptetheus traces, events and artifacts in SQLite; its own connection, thread-safe.

    It shares the events database file (its own tables), so one data file holds
    everything the local backend keeps; ``:memory:`` gives it a throwaway one.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self._lock = threading.Lock()
        make_private_database(path)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.executescript(_SCHEMA)
            row = self._conn.execute("SELECT COALESCE(MAX(received), 0) FROM pt_events").fetchone()
            self._received = int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def create(self, app: str, trace: Dict[str, Any]) -> bool:
        """Store a new trace; False if the App already has one with this id (nothing changes then)."""
        with self._lock:
            seq = self._conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM pt_traces WHERE app = ?", (app,)).fetchone()[0]
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO pt_traces (app, id, agent, project_id, user_goal, created_at, seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (app, trace["id"], trace.get("agent"), trace.get("project_id"), trace.get("user_goal"),
                 trace["created_at"], seq),
            )  # fmt: skip
            return cursor.rowcount == 1

    def exists(self, app: str, trace_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM pt_traces WHERE app = ? AND id = ?", (app, trace_id)).fetchone() \
                is not None  # fmt: skip

    def append(self, app: str, trace_id: str, events: List[Dict[str, Any]]) -> int:
        """Store events in one transaction; returns how many were new (replays are skipped by idempotency key)."""
        with self._lock:
            rows = []
            for event in events:
                self._received += 1
                rows.append((app, trace_id, event["idempotency_key"], event["seq"], event["type"],
                             event.get("session_id"), event["timestamp"], orjson.dumps(event["payload"]).decode(),
                             self._received))  # fmt: skip
            before = self._conn.total_changes
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO pt_events (app, trace_id, idempotency_key, seq, type, session_id, timestamp,"
                    " payload, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return self._conn.total_changes - before

    def attach(self, app: str, trace_id: str, filename: Optional[str], artifact_type: Optional[str],
               content_type: str, data: bytes) -> int:  # fmt: skip
        with self._lock:
            n = self._conn.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM pt_artifacts WHERE app = ? AND trace_id = ?",
                                   (app, trace_id)).fetchone()[0]  # fmt: skip
            self._conn.execute(
                "INSERT INTO pt_artifacts (app, trace_id, n, filename, artifact_type, content_type, size, data, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (app, trace_id, n, filename, artifact_type, content_type, len(data), data, _now()),
            )  # fmt: skip
            return int(n)

    def traces(self, app: Optional[str], limit: int) -> List[Dict[str, Any]]:
        where, args = ("WHERE app = ?", (app,)) if app is not None else ("", ())
        with self._lock:
            rows = self._conn.execute(
                f"SELECT t.*, (SELECT COUNT(*) FROM pt_events e WHERE e.app = t.app AND e.trace_id = t.id) AS events "
                f"FROM pt_traces t {where} ORDER BY created_at DESC, seq DESC LIMIT ?", (*args, limit)).fetchall()  # fmt: skip
        return [_trace(row) | {"events": row["events"]} for row in rows]

    def trace(self, app: Optional[str], trace_id: str, limit: int = 1000,
              after: Optional[Tuple[int, int]] = None) -> Optional[Dict[str, Any]]:  # fmt: skip
        """The trace, a page of its events (by ``seq``, then arrival; at most ``limit`` and about
        :data:`MAX_PAGE_BYTES`) with ``next_cursor`` when more follow, and its artifacts' descriptions."""
        where, args = ("app = ? AND ", (app,)) if app is not None else ("", ())
        seq, received = after or (-1, -1)
        events: List[Dict[str, Any]] = []
        more = False
        with self._lock:
            row = self._conn.execute(f"SELECT * FROM pt_traces WHERE {where}id = ? ORDER BY app LIMIT 1",
                                     (*args, trace_id)).fetchone()  # fmt: skip
            if row is None:
                return None
            size = 0
            for event in self._conn.execute(
                    "SELECT type, session_id, timestamp, seq, idempotency_key, payload, received FROM pt_events "
                    "WHERE app = ? AND trace_id = ? AND (seq, received) > (?, ?) ORDER BY seq, received",
                    (row["app"], trace_id, seq, received)):  # fmt: skip
                if len(events) >= limit or (events and size + len(event["payload"]) > MAX_PAGE_BYTES):
                    more = True
                    break
                size += len(event["payload"])
                events.append(dict(event))
            artifacts = self._conn.execute(
                "SELECT n, filename, artifact_type, content_type, size, created_at FROM pt_artifacts "
                f"WHERE app = ? AND trace_id = ? ORDER BY n LIMIT {_LIST_LIMIT_MAX}", (row["app"], trace_id)).fetchall()  # fmt: skip
        body = _trace(row)
        if more:
            body["next_cursor"] = f"{events[-1]['seq']}.{events[-1]['received']}"
        body["events"] = [{**{k: v for k, v in event.items() if k != "received"},
                           "payload": orjson.loads(event["payload"])} for event in events]  # fmt: skip
        body["artifacts"] = [{"id": a["n"], **{k: a[k] for k in a.keys() if k != "n"}} for a in artifacts]
        return body

    def artifact(self, app: Optional[str], trace_id: str, n: int) -> Optional[Tuple[str, bytes]]:
        where, args = ("app = ? AND ", (app,)) if app is not None else ("", ())
        with self._lock:
            row = self._conn.execute(f"SELECT content_type, data FROM pt_artifacts WHERE {where}trace_id = ? AND n = ?"
                                     " LIMIT 1", (*args, trace_id, n)).fetchone()  # fmt: skip
        return None if row is None else (row["content_type"], bytes(row["data"]))


def _trace(row: sqlite3.Row) -> Dict[str, Any]:
    return {"id": row["id"], "agent": row["agent"], "project_id": row["project_id"], "user_goal": row["user_goal"],
            "created_at": row["created_at"]}  # fmt: skip


def _now() -> str:
    return format_timestamp(datetime.now(timezone.utc))


# --- validation: the reasons a request or one event is refused -------------------------------------------------------


def _text(body: Dict[str, Any], name: str, limit: int, required: bool = False) -> Optional[str]:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise HttpError(400, f"{name} must be a string of 1..{limit} characters")
    return value


def parse_trace(payload: Any) -> Dict[str, Any]:
    """A create-trace body to the row it stores; HttpError(400) naming the field at fault."""
    if not isinstance(payload, dict):
        raise HttpError(400, "body must be a JSON object {id, agent, project_id, user_goal}")
    errors = storage_errors(payload)
    if errors:
        raise HttpError(400, "; ".join(errors))
    trace = {
        "id": _text(payload, "id", MAX_ID_CHARS) or "trace_" + uuid.uuid4().hex,
        "agent": _text(payload, "agent", MAX_ID_CHARS),
        "project_id": _text(payload, "project_id", MAX_ID_CHARS),
        "user_goal": _text(payload, "user_goal", MAX_TEXT_CHARS),
        "created_at": _now(),
    }
    return trace


def event_errors(event: Any) -> List[str]:
    """Why one event cannot be stored; [] if it can."""
    if not isinstance(event, dict):
        return ["event must be an object"]
    errors = storage_errors(event)
    if errors:
        return errors
    for name, limit in (("type", 64), ("idempotency_key", MAX_ID_CHARS)):
        value = event.get(name)
        if not isinstance(value, str) or not value or len(value) > limit:
            errors.append(f"{name} required (1..{limit} characters)")
    session_id = event.get("session_id")
    if session_id is not None and (not isinstance(session_id, str) or len(session_id) > MAX_ID_CHARS):
        errors.append(f"session_id must be a string of at most {MAX_ID_CHARS} characters")
    seq = event.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_COUNT:
        errors.append(f"seq required: an integer in 0..{MAX_COUNT}")
    if not isinstance(event.get("timestamp"), str) or parse_timestamp(event["timestamp"]) is None:
        errors.append("timestamp required: RFC 3339, e.g. 2026-01-01T00:00:00Z")
    payload = event.get("payload", {})
    if not isinstance(payload, dict):
        errors.append("payload must be an object")
    elif len(orjson.dumps(payload)) > MAX_JSON_BYTES:
        errors.append(f"payload exceeds {MAX_JSON_BYTES} bytes")
    return errors


# --- the routes ----------------------------------------------------------------------------------------------------


class PromptetheusRoutes:
    """The ``/api/traces`` routes over one :class:`TraceStore`; the backend service dispatches to ``handle``."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    @staticmethod
    def owns(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    async def handle(self, service: Any, request: Request, caller: Caller, parse_body: Callable[[bytes], Any]) -> Response:
        parts = [unquote(p, errors="replace") for p in
                 request.raw_path.decode("latin-1").split("?", 1)[0][len(PREFIX):].strip("/").split("/") if p]  # fmt: skip
        if request.method == "POST":
            if caller.is_admin:
                raise HttpError(403, "the admin key reads every App; write with an App's key")
            if not parts:
                data, _ = await request.body(("application/json",))
                trace = parse_trace(await service.run(parse_body, data))
                created = await service.run(self.store.create, caller.app, trace)
                if not created:
                    raise HttpError(409, f"trace {trace['id']!r} already exists")
                return json_response(201, trace)
            if len(parts) == 2 and parts[1] == "events":
                data, _ = await request.body(("application/json",))
                status, body = await service.run(self._append, caller.app, parts[0], data, parse_body)
                return json_response(status, body)
            if len(parts) == 2 and parts[1] == "artifacts":
                return await self._attach(service, request, caller.app, parts[0])
            if len(parts) == 2 and parts[1] == "analyze":
                raise HttpError(501, "analysis is not part of the local backend: it stores traces, it does not judge them")
            raise HttpError(404, "not found")
        if request.method in ("GET", "HEAD"):
            if not parts:
                limit = _limit(request.query_string)
                traces = await service.run(self.store.traces, caller.app, limit)
                return json_response(200, {"traces": traces, "count": len(traces)})
            if len(parts) == 1:
                query = dict(parse_qsl(request.query_string.decode("latin-1"), errors="replace"))
                trace = await service.run(self.store.trace, caller.app, parts[0], _limit(request.query_string, 1000),
                                          _cursor(query.get("cursor")))  # fmt: skip
                if trace is None:
                    raise HttpError(404, f"no trace {parts[0]!r}")
                return json_response(200, trace)
            if len(parts) == 3 and parts[1] == "artifacts" and parts[2].isdigit():
                found = await service.run(self.store.artifact, caller.app, parts[0], int(parts[2]))
                if found is None:
                    raise HttpError(404, "no such artifact")
                # Served as bytes to download, never rendered: an uploaded page must not run as ours.
                return Response(200, found[1], "application/octet-stream",
                                {"X-Content-Type-Options": "nosniff", "Content-Disposition": "attachment"})
            raise HttpError(404, "not found")
        raise HttpError(405, f"method {request.method} not allowed")

    def _append(self, app: str, trace_id: str, data: bytes, parse_body: Callable[[bytes], Any]) -> Tuple[int, Dict[str, Any]]:
        payload = parse_body(data)
        events = payload.get("events") if isinstance(payload, dict) else None
        if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS:
            raise HttpError(400, f"body must be {{\"events\": [...]}} with 1..{MAX_EVENTS} events")
        if not self.store.exists(app, trace_id):
            raise HttpError(404, f"no trace {trace_id!r}: create it first (POST {PREFIX})")
        rejected: List[Dict[str, Any]] = []
        valid: List[Dict[str, Any]] = []
        for index, event in enumerate(events):
            errors = event_errors(event)
            if errors:
                key = event.get("idempotency_key") if isinstance(event, dict) else None
                rejected.append({"index": index, "idempotency_key": key if isinstance(key, str) and not
                                 storage_errors({"k": key}) else None, "error": "; ".join(errors)})  # fmt: skip
            else:
                valid.append(event)
        accepted = self.store.append(app, trace_id, valid) if valid else 0
        body = {"ok": not rejected, "accepted": accepted, "skipped": len(valid) - accepted, "rejected": rejected,
                "total": len(events)}  # fmt: skip
        return (200 if not rejected else 207 if valid else 400), body

    async def _attach(self, service: Any, request: Request, app: str, trace_id: str) -> Response:
        declared = request.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > MAX_ARTIFACT_BYTES:
            raise HttpError(413, f"artifact exceeds {MAX_ARTIFACT_BYTES} bytes")
        media_type = (request.headers.get("Content-Type") or "application/octet-stream").split(";")[0].strip().lower()
        data, _ = await request.body((media_type, ""))
        if len(data) > MAX_ARTIFACT_BYTES:
            raise HttpError(413, f"artifact exceeds {MAX_ARTIFACT_BYTES} bytes")
        names = {}
        for header in ("X-Promptetheus-Filename", "X-Promptetheus-Artifact-Type"):
            value = request.headers.get(header)
            if value is not None and (len(value) > MAX_ID_CHARS or not value.isprintable()):
                raise HttpError(400, f"{header} must be printable, at most {MAX_ID_CHARS} characters")
            names[header] = value
        if not await service.run(self.store.exists, app, trace_id):
            raise HttpError(404, f"no trace {trace_id!r}: create it first (POST {PREFIX})")
        n = await service.run(self.store.attach, app, trace_id, names["X-Promptetheus-Filename"],
                              names["X-Promptetheus-Artifact-Type"], media_type, data)  # fmt: skip
        return json_response(201, {"id": n, "trace_id": trace_id, "size": len(data)})


def _limit(query_string: bytes, default: int = 50) -> int:
    raw = dict(parse_qsl(query_string.decode("latin-1"), errors="replace")).get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= _LIST_LIMIT_MAX:
        raise HttpError(400, f"limit must be an integer in 1..{_LIST_LIMIT_MAX}")
    return int(raw)


def _cursor(raw: Optional[str]) -> Optional[Tuple[int, int]]:
    """A ``next_cursor`` handed out by :meth:`TraceStore.trace` (``seq.received``), or None."""
    if raw is None:
        return None
    seq, _, received = raw.partition(".")
    if not (seq.isdigit() and received.isdigit()) or len(raw) > 40:
        raise HttpError(400, "invalid cursor")
    return int(seq), int(received)
