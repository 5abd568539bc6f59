"""The local PromptWall-compatible backend: ``POST /v1/events`` and the console reads.

It follows the ``/v1/events`` reference to the letter (statuses 200/207/400/401
and their bodies, idempotent ``request_id``, the documented defaults) so that
what works against it works against PromptWall, and tests can hit a real server.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from .._httpserver import HttpError, JsonHandler, QuietServer, api_key_from, key_fingerprint
from ..record import MAX_BATCH, apply_defaults, validate_event
from .store import EventStore

logger = logging.getLogger("promptwall_otel.backend")

DEFAULT_PORT = 8787
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
_JSON_TYPES = ("application/json",)
_CONSOLE_LIMIT_MAX = 1000


@dataclass(frozen=True)
class BackendConfig:
    """How the backend listens and whom it lets in (``api_keys`` empty: any non-empty key)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: str = ":memory:"
    api_keys: FrozenSet[str] = field(default_factory=frozenset)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES

    def __repr__(self) -> str:  # keys never reach a repr
        return (
            f"BackendConfig(host={self.host!r}, port={self.port}, db={self.db!r}, "
            f"api_keys=<{len(self.api_keys)} configured>)"
        )


class BackendServer(QuietServer):
    """A threading HTTP server that owns its :class:`EventStore`."""

    def __init__(self, config: BackendConfig, store: Optional[EventStore] = None) -> None:
        self.config = config
        self.store = store or EventStore(config.db)
        super().__init__((config.host, config.port), _BackendHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.store.close()


def ingest(store: EventStore, payload: Any, key_fp: Optional[str] = None) -> tuple[int, Dict[str, Any]]:
    """Apply ``POST /v1/events`` semantics to a parsed body: (HTTP status, response body).

    Validation happens for the whole request before anything is written, and
    the valid events are written in one transaction.
    """
    if isinstance(payload, dict) and "events" in payload:
        events = payload["events"]
        if not isinstance(events, list) or not events:
            raise HttpError(400, f"events must be a non-empty array (1..{MAX_BATCH} events)")
        if len(events) > MAX_BATCH:
            raise HttpError(400, f"too many events: {len(events)} > {MAX_BATCH} per request")
    elif isinstance(payload, dict):
        events = [payload]
    else:
        raise HttpError(400, "body must be an event object or {\"events\": [...]}")

    rejected: List[Dict[str, Any]] = []
    valid: List[Dict[str, Any]] = []
    for index, event in enumerate(events):
        errors = validate_event(event)
        if errors:
            request_id = event.get("request_id") if isinstance(event, dict) else None
            rejected.append({"index": index, "request_id": request_id, "error": "; ".join(errors)})
        else:
            valid.append(apply_defaults(event))

    outcomes = store.insert(valid, key_fp) if valid else []
    accepted = sum(outcomes)
    body = {
        "ok": not rejected,
        "accepted": accepted,
        "skipped": len(outcomes) - accepted,
        "rejected": rejected,
        "total": len(events),
    }
    if not rejected:
        return 200, body
    return (207 if valid else 400), body


class _BackendHandler(JsonHandler):
    server: BackendServer

    def _authorize(self) -> str:
        key = api_key_from(self.headers)
        if key is None:
            raise HttpError(401, "missing API key: send X-API-Key or Authorization: Bearer")
        allowed = self.server.config.api_keys
        if allowed and key not in allowed:
            raise HttpError(401, "invalid API key")
        return key

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        try:
            if urlsplit(self.path).path.rstrip("/") != "/v1/events":
                raise HttpError(404, "not found")
            key = self._authorize()
            config = self.server.config
            data, _ = self.read_body(config.max_body_bytes, config.max_decompressed_bytes, _JSON_TYPES)
            try:
                payload = json.loads(data)
            except (UnicodeDecodeError, ValueError) as exc:
                raise HttpError(400, f"malformed JSON: {exc}") from None
            status, body = ingest(self.server.store, payload, key_fingerprint(key))
            self.send_json(status, body)
        except HttpError as error:
            self.send_error_json(error)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        try:
            url = urlsplit(self.path)
            path = url.path.rstrip("/")
            if path == "/healthz":
                self.send_json(200, {"ok": True})
                return
            if not path.startswith("/api/console/"):
                raise HttpError(404, "not found")
            self._authorize()
            self.send_json(200, self._console(path[len("/api/console/"):], dict(parse_qsl(url.query))))
        except HttpError as error:
            self.send_error_json(error)

    def _console(self, route: str, query: Dict[str, str]) -> Dict[str, Any]:
        store = self.server.store
        limit = _limit(query.get("limit"))
        if route == "requests":
            metadata = {k[len("metadata."):]: v for k, v in query.items() if k.startswith("metadata.")}
            requests = store.recent(
                limit,
                session_id=query.get("session_id"),
                end_user_id=query.get("end_user_id"),
                model=query.get("model"),
                metadata=metadata,
            )
            return {"requests": requests, "count": len(requests)}
        if route == "sessions":
            sessions = store.sessions(limit)
            return {"sessions": sessions, "count": len(sessions)}
        if route.startswith("sessions/"):
            session_id = unquote(route[len("sessions/"):])
            turns = store.session(session_id)
            if not turns:
                raise HttpError(404, f"no session {session_id!r}")
            return {"session_id": session_id, "turns": turns, "count": len(turns)}
        if route == "billing":
            return store.billing()
        raise HttpError(404, "not found")


def _limit(raw: Optional[str]) -> int:
    if raw is None:
        return 50
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "limit must be an integer") from None
    if not 1 <= value <= _CONSOLE_LIMIT_MAX:
        raise HttpError(400, f"limit must be in 1..{_CONSOLE_LIMIT_MAX}")
    return value
