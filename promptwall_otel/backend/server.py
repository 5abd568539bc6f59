"""The local PromptWall-compatible backend: ``POST /v1/events`` and the console reads, per App.

It follows the ``/v1/events`` reference to the letter (statuses 200/207/400/401
and their bodies, idempotent ``request_id``, the documented defaults) so that
what works against it works against PromptWall, and tests can hit a real server.

Invariants: every request is answered (see ``promptwall_otel.webserver``);
an event is stored only if the store can hold it and give it back
(``checks.storage_errors``); every read is scoped to the caller's App
(``apps``); a reply never exceeds ``store.MAX_PAGE_BYTES`` of events.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, unquote

import orjson

from ..config import DEFAULT_LOCAL_PORT
from ..record import MAX_BATCH, apply_defaults, stored_form, validate_event
from ..serving import HttpError, api_key_from
from ..webserver import HttpService, Limits, Request, Response, ServerThread, json_response
from .apps import Apps, Caller
from .arrivals import Arrivals
from .checks import NonFinite, beyond_64_bits, storage_errors
from .console import Console, is_loopback
from .promptetheus import PromptetheusRoutes, TraceStore
from .store import BadCursor, EventStore, json_path

logger = logging.getLogger("promptwall_otel.backend")

DEFAULT_PORT = DEFAULT_LOCAL_PORT
DEFAULT_LIMITS = Limits()
_JSON_TYPES = ("application/json",)
_CONSOLE_LIMIT_MAX = 1000
# 19 digits in a row, found by mapping every digit to "0" and searching (a regex is 15× slower here).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19


@dataclass(frozen=True)
class BackendConfig:
    """How the backend listens and whom it lets in.

    ``api_keys`` maps each key to its App name (empty: any non-empty key is
    an App of its own); with ``anonymous_key`` set, requests without a key,
    and with that key, are App ``anonymous`` (the ``dev`` command).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: str = ":memory:"
    api_keys: Mapping[str, str] = field(default_factory=dict)
    anonymous_key: Optional[str] = None
    limits: Limits = DEFAULT_LIMITS
    announce_arrivals: bool = False  # `serve` turns this on (off with --quiet): a summary line as events arrive

    def __repr__(self) -> str:  # keys never reach a repr
        return (
            f"BackendConfig(host={self.host!r}, port={self.port}, db={self.db!r}, "
            f"api_keys=<{len(self.api_keys)} configured>, anonymous={bool(self.anonymous_key)})"
        )


def parse_body(data: bytes) -> Tuple[Any, bool]:
    """The JSON body, and whether orjson parsed it (``strict_json``); HttpError(400) if it is not JSON.

    orjson first (fast, strict); whatever it refuses is parsed again by the
    standard library, which takes ``NaN``/``Infinity``, lone surrogates and
    big integers, so that such values become a reason on their event rather
    than a refusal of the whole batch. orjson reads integers past 64 bits as
    floats, silently: when the body has a run of 19 digits or more (in a
    number, or just in a string: hex ids often have one), the parsed values
    are searched for a number outside the signed 64-bit range, and if there
    is one the standard library parses the body instead, so such an integer
    is refused, never stored rounded. What orjson accepts needs fewer storage
    checks (``checks.storage_errors``).
    """
    if _LONG_DIGIT_RUN not in data.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(data), True
        except orjson.JSONDecodeError:
            pass
    else:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            if not beyond_64_bits(payload):
                return payload, True
    try:
        return json.loads(data, parse_constant=NonFinite), False
    except RecursionError:
        raise HttpError(400, "malformed JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpError(400, f"malformed JSON: {exc}") from None


def ingest(store: EventStore, payload: Any, app: str, strict_json: bool = False) -> Tuple[int, Dict[str, Any]]:
    """Apply ``POST /v1/events`` semantics to a parsed body for one App: (HTTP status, response body).

    Validation happens for the whole request before anything is written, and
    the valid events are written in one transaction. ``strict_json``: see
    :func:`parse_body`.
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
        errors = storage_errors(event, strict_json)
        stored = None if errors else stored_form(event)  # the common case: checked and defaulted in one pass
        if stored is None and not errors:
            errors = validate_event(event)
        if errors:
            request_id = event.get("request_id") if isinstance(event, dict) else None
            if not _replyable(request_id):
                request_id = None
            rejected.append({"index": index, "request_id": request_id, "error": "; ".join(errors)})
        else:
            valid.append(stored if stored is not None else apply_defaults(event))

    accepted = store.insert(valid, app) if valid else 0
    body = {
        "ok": not rejected,
        "accepted": accepted,
        "skipped": len(valid) - accepted,
        "rejected": rejected,
        "total": len(events),
    }
    if not rejected:
        return 200, body
    return (207 if valid else 400), body


def _replyable(value: Any) -> bool:
    """Whether a rejected event's request_id can be echoed back in JSON as it came."""
    if value is None or isinstance(value, (bool, int)):
        return value is None or isinstance(value, bool) or abs(value) < 2**63
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return len(value) <= 1024
    return False


class BackendService(HttpService):
    """The backend's ASGI application over one :class:`EventStore`."""

    def __init__(self, config: BackendConfig, store: Optional[EventStore] = None) -> None:
        super().__init__(config.limits)
        self.config = config
        self.store = store or EventStore(config.db)
        self.apps = Apps(config.api_keys, self.store.salt(), anonymous_key=config.anonymous_key)
        # Keyless console login reads every App: only where the API has no keys to protect and only
        # this machine can connect (the API itself takes any key then).
        self.console = Console(self.store, self.apps, keyless=not config.api_keys and is_loopback(config.host))
        self.arrivals = Arrivals() if config.announce_arrivals else None
        # Promptetheus' routes (agent runs as traces): a second target the same pipeline can feed.
        self.traces = PromptetheusRoutes(TraceStore(config.db))

    def close(self) -> None:
        super().close()
        self.traces.store.close()
        if self.arrivals is not None:
            self.arrivals.close()
        self.store.close()

    def _caller(self, request: Request) -> Caller:
        return self.apps.caller(api_key_from(request.headers))

    async def handle(self, request: Request) -> Response:
        path = request.path
        if self.console.owns(path):
            return await self.console.handle(self, request)
        if self.traces.owns(path):
            return await self.traces.handle(self, request, self._caller(request), lambda data: parse_body(data)[0])
        if request.method == "POST":
            if path != "/v1/events":
                raise HttpError(404, "not found")
            caller = self._caller(request)
            if caller.is_admin:
                raise HttpError(403, "the admin key reads every App; send events with an App's key")
            data, _ = await request.body(_JSON_TYPES)
            status, body = await self.run(self._ingest, data, caller.app)
            return Response(status, body)
        if request.method in ("GET", "HEAD"):
            if path == "/healthz":
                return json_response(200, {"ok": True})
            if not path.startswith("/api/console/"):
                raise HttpError(404, "not found")
            caller = self._caller(request)
            query = dict(parse_qsl(request.query_string.decode("latin-1"), errors="replace"))
            route = unquote(request.raw_path.decode("latin-1"), errors="replace").rstrip("/")[len("/api/console/"):]
            return await self.run(self._console, route, query, caller)
        raise HttpError(405, f"method {request.method} not allowed")

    def _ingest(self, data: bytes, app: str) -> Tuple[int, bytes]:
        payload, strict_json = parse_body(data)
        status, body = ingest(self.store, payload, app, strict_json)
        if self.arrivals is not None and body.get("accepted"):
            events = payload.get("events", [payload]) if isinstance(payload, dict) else []
            models = [e.get("model") if isinstance(e, dict) and isinstance(e.get("model"), str) else None
                      for e in events[: body["accepted"]]] if not body.get("rejected") else []  # fmt: skip
            self.arrivals.note(app, body["accepted"], models)
        return status, orjson.dumps(body)

    def _console(self, route: str, query: Dict[str, str], caller: Caller) -> Response:
        store = self.store
        app = caller.app
        limit = _limit(query.get("limit"))
        cursor = query.get("cursor") or None
        try:
            if route == "requests":
                metadata = {k[len("metadata."):]: v for k, v in query.items() if k.startswith("metadata.")}
                for key in metadata:
                    try:
                        json_path(key)
                    except ValueError as exc:
                        raise HttpError(400, str(exc)) from None
                requests, next_cursor = store.recent(
                    app, limit, cursor, session_id=query.get("session_id"), end_user_id=query.get("end_user_id"),
                    model=query.get("model"), metadata=metadata,
                )  # fmt: skip
                return json_response(200, _page({"requests": requests, "count": len(requests)}, next_cursor))
            if route == "sessions":
                sessions = store.sessions(app, limit)
                return json_response(200, {"sessions": sessions, "count": len(sessions)})
            if route.startswith("sessions/"):
                session_id = route[len("sessions/"):]
                turns, next_cursor = store.session(app, session_id, _limit(query.get("limit"), 1000), cursor)
                if not turns and cursor is None:
                    raise HttpError(404, "no such session")
                return json_response(200, _page({"session_id": session_id, "turns": turns, "count": len(turns)},
                                                next_cursor))  # fmt: skip
            if route == "billing":
                return json_response(200, store.billing(app))
        except BadCursor:
            raise HttpError(400, "invalid cursor") from None
        raise HttpError(404, "not found")


def _page(body: Dict[str, Any], next_cursor: Optional[str]) -> Dict[str, Any]:
    """``next_cursor`` appears only when there is a next page: pass it back as ``cursor`` to read on."""
    if next_cursor is not None:
        body["next_cursor"] = next_cursor
    return body


def _limit(raw: Optional[str], default: int = 50) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "limit must be an integer") from None
    if not 1 <= value <= _CONSOLE_LIMIT_MAX:
        raise HttpError(400, f"limit must be in 1..{_CONSOLE_LIMIT_MAX}")
    return value


class BackendServer:
    """The backend on a real socket: ``start()``, ``url``, ``stop()``; a context manager too."""

    def __init__(self, config: BackendConfig, store: Optional[EventStore] = None) -> None:
        self.config = config
        self.service = BackendService(config, store)
        self._thread = ServerThread(self.service, config.host, config.port, name="backend")

    @property
    def url(self) -> str:
        return self._thread.url

    @property
    def store(self) -> EventStore:
        return self.service.store

    def start(self) -> "BackendServer":
        self._thread.start()
        return self

    def wait(self) -> None:
        self._thread.wait()

    def stop(self) -> None:
        self._thread.stop()

    def __enter__(self) -> "BackendServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
