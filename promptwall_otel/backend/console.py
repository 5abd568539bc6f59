"""The local web console: server-rendered pages over the backend's store, per App.

Pages (``/observability``, ``/traces``, ``/traces/{request_id}``,
``/sessions``, ``/sessions/{session_id}``, ``/billing``) are Jinja2
templates rendered on a worker thread from the same store queries as the read
API, with a few lines of local JavaScript (``static/console.js``) that swap in
a fresh copy of the page's live region every few seconds.

Invariants:

- **The key is never kept.** ``POST /login`` resolves the key to its App
  (``Apps.caller``, exactly as the API does) and forgets it; the browser gets
  an opaque random session id in an ``HttpOnly; SameSite=Strict`` cookie, and
  the server keeps {session id: App} in memory only (bounded, expiring). No
  key or session id is ever in a URL, a page, a log line or a repr.
- **Scoping is the API's.** Every page reads through ``EventStore`` with the
  session's App (``None`` only for the admin key, or for keyless login when no
  keys are configured and the server listens on loopback: then every App).
- **Nothing from an event runs.** Templates autoescape everything; charts are
  SVG built from numbers; and every page sends a Content-Security-Policy that
  allows only this server's own script and stylesheet, so injected markup
  could not run even if it were not escaped.
- **Keys cannot be guessed at speed.** Each client address gets at most
  :data:`LOGIN_FAILURES_PER_MINUTE` failed keys a minute; past that every
  login from it, right key or wrong, is ``429`` with ``Retry-After`` until
  the oldest failure is a minute old (the addresses tracked are bounded).
- State-changing requests (login, logout) are POSTs that a foreign page
  cannot forge: the cookie is ``SameSite=Strict`` and a cross-origin
  ``Origin`` is refused.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, unquote, urlencode

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..record import STATUSES, format_timestamp
from ..serving import HttpError
from ..webserver import Request, Response
from .apps import Apps, Caller
from .store import CREDIT_USD_PER_MILLION_TOKENS, SCAN_ROWS, BadCursor, EventStore, json_path

COOKIE = "pw_console"
SESSION_IDLE_S = 12 * 3600
MAX_SESSIONS = 1000  # a login flood evicts the oldest sessions instead of growing memory
PAGE_SIZE = 50
REFRESH_MS = 3000  # new events show within ~5 s: one refresh period plus the exporter's batching
LOGIN_FAILURES_PER_MINUTE = 10
MAX_THROTTLED_ADDRESSES = 10_000  # past it the address that failed least recently is forgotten

_HERE = Path(__file__).resolve().parent
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_FORM_TYPES = ("application/x-www-form-urlencoded",)
_WINDOWS = {  # name: (label, how far back, chart bucket as a started_at prefix length, bucket step)
    "hour": ("last hour", timedelta(hours=1), 16, timedelta(minutes=1)),
    "day": ("last day", timedelta(days=1), 13, timedelta(hours=1)),
    "week": ("last week", timedelta(days=7), 13, timedelta(hours=1)),
    "all": ("all time", None, 10, timedelta(days=1)),
}
_BUCKET_FORMATS = {16: "%Y-%m-%dT%H:%M", 13: "%Y-%m-%dT%H", 10: "%Y-%m-%d"}
_MAX_FILLED_BUCKETS = 400
_TRACE_FILTERS = ("model", "provider", "status", "session_id", "end_user_id", "use_case")
_PAGES = ("observability", "traces", "sessions", "billing")
_STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
           "favicon.svg": "image/svg+xml"}


class LoginThrottle:
    """Failed login keys per client address in a sliding minute; bounded in addresses and in failures each."""

    def __init__(self, limit: int = LOGIN_FAILURES_PER_MINUTE, window_s: float = 60.0,
                 max_addresses: int = MAX_THROTTLED_ADDRESSES, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.limit, self.window_s, self.max_addresses, self._clock = limit, window_s, max_addresses, clock
        self._failures: "OrderedDict[str, Deque[float]]" = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> Optional[int]:
        """Seconds until ``address`` may try again (at least 1), or None if it may now."""
        now = self._clock()
        with self._lock:
            failures = self._failures.get(address)
            if failures is None:
                return None
            while failures and failures[0] <= now - self.window_s:
                failures.popleft()
            if not failures:
                del self._failures[address]
                return None
            if len(failures) < self.limit:
                return None
            return max(1, math.ceil(failures[0] + self.window_s - now))

    def failed(self, address: str) -> None:
        with self._lock:
            failures = self._failures.pop(address, None) or deque(maxlen=self.limit)
            failures.append(self._clock())
            self._failures[address] = failures  # most recent failure last: eviction takes the stalest
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)


@dataclass(frozen=True)
class _Session:
    caller: Caller
    label: str
    expires: float
    view: Optional[str] = None  # the admin's App picker: None is every App

    @property
    def app(self) -> Optional[str]:
        """The App whose events the pages show (an App's session: its own, always)."""
        return self.caller.app if not self.caller.is_admin else self.view


class Console:
    """The console's routes; ``owns(path)`` says which requests are its."""

    def __init__(self, store: EventStore, apps: Apps, keyless: bool) -> None:
        self.store = store
        self.apps = apps
        self.keyless = keyless  # log in without a key (no keys configured, loopback only): every App
        self._sessions: "OrderedDict[str, _Session]" = OrderedDict()
        self._lock = threading.Lock()
        self.throttle = LoginThrottle()
        # Events omit absent fields, so templates test them (``is defined``, ``or``): the lenient Undefined.
        self._env = Environment(loader=FileSystemLoader(str(_HERE / "templates")),
                                autoescape=select_autoescape(default=True, default_for_string=True))
        self._env.filters.update(num=_num, usd=_usd, ms=_ms, when=_when, pct=_pct, json=_pretty)
        self._static = {name: (_HERE / "static" / name).read_bytes() for name in _STATIC}

    def __repr__(self) -> str:  # session ids are credentials: never shown
        return f"Console(<{len(self._sessions)} sessions>, keyless={self.keyless})"

    @staticmethod
    def owns(path: str) -> bool:
        first = path.split("/", 2)[1]
        return path == "/" or first in _PAGES or first in ("login", "logout", "app", "static")

    async def handle(self, service: Any, request: Request) -> Response:
        path = request.path
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if request.method not in ("GET", "HEAD") or name not in self._static:
                raise HttpError(404, "not found")
            return Response(200, self._static[name], _STATIC[name], {**_SECURITY_HEADERS, "Cache-Control": "no-cache"})
        session_id, session = self._session(request)
        if request.method == "POST":
            self._same_origin(request)
            if path == "/login":
                data, _ = await request.body(_FORM_TYPES)
                return self._login(dict(parse_qsl(data.decode("utf-8", "replace"))), session_id,
                                   request.client_host or "unknown")  # fmt: skip
            if path == "/app" and session is not None and session_id is not None:
                data, _ = await request.body(_FORM_TYPES)
                return self._pick(session_id, session, dict(parse_qsl(data.decode("utf-8", "replace"))))
            if path == "/logout":
                if session_id is not None:
                    with self._lock:
                        self._sessions.pop(session_id, None)
                return _redirect("/login", {"Set-Cookie": f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"})
            raise HttpError(405, "method POST not allowed")
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, f"method {request.method} not allowed")
        query = dict(parse_qsl(request.query_string.decode("latin-1"), errors="replace"))
        here = path + ("?" + request.query_string.decode("latin-1") if request.query_string else "")
        if path == "/login":
            if session is not None:
                return _redirect(_safe_next(query.get("next")))
            return self._html(200, "login.html", keyless=self.keyless, next=_safe_next(query.get("next")), error=None)
        if session is None:
            return _redirect("/login?" + urlencode({"next": here}))
        if path == "/":
            return _redirect("/observability")
        route = unquote(request.raw_path.decode("latin-1"), errors="replace").rstrip("/")
        return await service.run(self._page, route, query, session, here)

    # --- sessions -------------------------------------------------------------

    def _session(self, request: Request) -> Tuple[Optional[str], Optional[_Session]]:
        session_id = _cookie(request.headers.get("Cookie"), COOKIE)
        if session_id is None:
            return None, None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.expires < now:
                self._sessions.pop(session_id, None)
                return session_id, None
            session = _Session(session.caller, session.label, now + SESSION_IDLE_S, session.view)
            self._sessions[session_id] = session
            self._sessions.move_to_end(session_id)
        return session_id, session

    def _login(self, form: Dict[str, str], old_session: Optional[str], address: str) -> Response:
        key = form.get("key", "").strip()
        next_path = _safe_next(form.get("next"))
        wait = self.throttle.retry_after(address)
        if wait is not None:  # checked before the key, so a throttled guesser learns nothing about it
            return self._html(429, "login.html", {"Retry-After": str(wait)}, keyless=self.keyless, next=next_path,
                              error=f"Too many wrong keys from your address; try again in {wait} s.")  # fmt: skip
        if not key and not self.keyless:
            return self._html(401, "login.html", keyless=self.keyless, next=next_path, error="Enter an App's API key.")
        if key:
            try:
                caller = self.apps.caller(key)
            except HttpError:
                self.throttle.failed(address)
                return self._html(401, "login.html", keyless=self.keyless, next=next_path, error="That key is not accepted here.")
        else:
            caller = Caller(None)
        label = caller.app if caller.app is not None else ("admin key" if key else "no key (every App)")
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            if old_session is not None:
                self._sessions.pop(old_session, None)  # a fresh id at each login: no session fixation
            self._sessions[session_id] = _Session(caller, label, time.monotonic() + SESSION_IDLE_S)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return _redirect(next_path, {"Set-Cookie": f"{COOKIE}={session_id}; Path=/; HttpOnly; SameSite=Strict"})

    def _pick(self, session_id: str, session: _Session, form: Dict[str, str]) -> Response:
        """The admin's App picker: later pages show that App only (an empty choice: every App)."""
        if not session.caller.is_admin:
            raise HttpError(403, "only the admin key's session can switch Apps")
        view = form.get("app") or None
        with self._lock:
            if session_id in self._sessions:
                self._sessions[session_id] = _Session(session.caller, session.label, session.expires, view)
        return _redirect(_safe_next(form.get("next")))

    @staticmethod
    def _same_origin(request: Request) -> None:
        origin = request.headers.get("Origin")
        host = request.headers.get("Host")
        if origin is not None and origin != "null" and host and origin.split("://", 1)[-1] != host:
            raise HttpError(403, "cross-origin form refused")

    # --- pages (worker threads) ----------------------------------------------------

    def _page(self, route: str, query: Dict[str, str], session: _Session, here: str) -> Response:
        app = session.app
        common: Dict[str, Any] = {"who": session.label, "admin": session.caller.is_admin, "query": query, "here": here,
                                  "picker": None}  # fmt: skip
        if session.caller.is_admin:
            common["picker"] = {"apps": self.store.apps(), "view": session.view}
        try:
            if route == "/observability":
                return self._html(200, "observability.html", page="observability", **common, **self._observability(app, query))
            if route == "/traces":
                return self._html(200, "traces.html", page="traces", **common, **self._traces(app, query))
            if route.startswith("/traces/"):
                event = self.store.event(app, route[len("/traces/"):])
                if event is None:
                    return self._html(404, "missing.html", page="traces", what="event", **common)
                return self._html(200, "event.html", page="traces", event=event, timeline=_timeline(event),
                                  messages=_messages(event), trace_ids=_trace_ids(event),
                                  rate=CREDIT_USD_PER_MILLION_TOKENS, **common)  # fmt: skip
            if route == "/sessions":
                return self._html(200, "sessions.html", page="sessions", sessions=self.store.sessions(app, PAGE_SIZE * 2),
                                  **common)  # fmt: skip
            if route.startswith("/sessions/"):
                session_id = route[len("/sessions/"):]
                turns, next_cursor = self.store.session(app, session_id, 1000, query.get("cursor") or None)
                if not turns:
                    return self._html(404, "missing.html", page="sessions", what="session", **common)
                return self._html(200, "session.html", page="sessions", session_id=session_id, turns=turns,
                                  next_cursor=next_cursor, rate=CREDIT_USD_PER_MILLION_TOKENS, **common)  # fmt: skip
            if route == "/billing":
                bill = self.store.billing(app)
                chart = _bars([(row["day"], row["total_tokens"]) for row in bill["by_day"]])
                return self._html(200, "billing.html", page="billing", bill=bill, chart=chart, **common)
        except BadCursor:
            raise HttpError(400, "invalid cursor") from None
        raise HttpError(404, "not found")

    def _observability(self, app: Optional[str], query: Dict[str, str]) -> Dict[str, Any]:
        window = query.get("window") if query.get("window") in _WINDOWS else "day"
        label, back, bucket_chars, step = _WINDOWS[window]
        now = datetime.now(timezone.utc)
        # A window starts at the start of its first chart bucket, so that bucket is whole, and the day and week
        # windows start on an hour: the store then reads them from its rollups alone (see store._Window).
        start = _bucket_start(now - back, bucket_chars) if back is not None else None
        stats = self.store.overview(app, format_timestamp(start) if start else None, bucket_chars)
        series = _fill(stats["series"], bucket_chars, step, start, now)
        decisions = [(name, stats["decisions"].get(name, 0)) for name in STATUSES]
        decisions += [(name, count) for name, count in stats["decisions"].items() if name not in STATUSES]
        return {
            "window": window, "windows": [(name, spec[0]) for name, spec in _WINDOWS.items()], "window_label": label,
            "stats": stats, "errors": int(stats["errors"]), "rate": CREDIT_USD_PER_MILLION_TOKENS,
            "requests_chart": _bars([(b, row["events"]) for b, row in series]),
            "tokens_chart": _bars([(b, row["total_tokens"]) for b, row in series]),
            "decisions_chart": _bars(decisions),
        }  # fmt: skip

    def _traces(self, app: Optional[str], query: Dict[str, str]) -> Dict[str, Any]:
        filters = {name: query[name] for name in _TRACE_FILTERS if query.get(name)}
        metadata = {k[len("metadata."):]: v for k, v in query.items() if k.startswith("metadata.")}
        pair = query.get("metadata", "")
        if "=" in pair:  # the filter form's single KEY=VALUE field
            key, _, value = pair.partition("=")
            metadata[key.strip()] = value.strip()
        for key in metadata:
            try:
                json_path(key)
            except ValueError as exc:
                raise HttpError(400, str(exc)) from None
        events, next_cursor = self.store.recent(app, PAGE_SIZE, query.get("cursor") or None, metadata=metadata,
                                                **filters)  # fmt: skip
        rest = {k: v for k, v in query.items() if k != "cursor"}
        return {
            "events": events, "filters": filters, "metadata_filter": pair or "; ".join(f"{k}={v}" for k, v in metadata.items()),
            "statuses": STATUSES, "paged": "cursor" in query,
            "partial": len(events) < PAGE_SIZE and next_cursor is not None, "scan_rows": SCAN_ROWS,
            "first_url": "/traces" + ("?" + urlencode(rest) if rest else ""),
            "next_url": "/traces?" + urlencode({**rest, "cursor": next_cursor}) if next_cursor else None,
        }  # fmt: skip

    def _html(self, status: int, template: str, headers: Optional[Dict[str, str]] = None, **context: Any) -> Response:
        body = self._env.get_template(template).render(refresh_ms=REFRESH_MS, **context)
        return Response(status, body.encode("utf-8"), "text/html; charset=utf-8", {**_SECURITY_HEADERS, **(headers or {})})


def _redirect(location: str, headers: Optional[Dict[str, str]] = None) -> Response:
    return Response(303, b"", "text/plain", {**_SECURITY_HEADERS, "Location": location, **(headers or {})})


def _safe_next(value: Optional[str]) -> str:
    """Where to go after login: a path of ours only (``//host`` or a scheme would leave the site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value and "://" not in value:
        return value
    return "/observability"


def _cookie(header: Optional[str], name: str) -> Optional[str]:
    for part in (header or "").split(";"):
        key, found, value = part.strip().partition("=")
        if found and key == name and value:
            return value
    return None


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fill(rows: List[Dict[str, Any]], chars: int, step: timedelta, start: Optional[datetime],
          end: datetime) -> List[Tuple[str, Dict[str, Any]]]:  # fmt: skip
    """The chart's buckets in order, empty ones included (so time reads evenly along the axis)."""
    found = {row["bucket"]: row for row in rows}
    fmt = _BUCKET_FORMATS[chars]
    if start is None:
        if not rows:
            return []
        start = datetime.strptime(rows[0]["bucket"], fmt).replace(tzinfo=timezone.utc)
        end = max(end, datetime.strptime(rows[-1]["bucket"], fmt).replace(tzinfo=timezone.utc))
    labels: List[str] = []
    moment = datetime.strptime(start.strftime(fmt), fmt).replace(tzinfo=timezone.utc)
    while moment <= end and len(labels) <= _MAX_FILLED_BUCKETS:
        labels.append(moment.strftime(fmt))
        moment += step
    if len(labels) > _MAX_FILLED_BUCKETS:  # too long to fill: the buckets that have events
        labels = sorted(found)
    empty = {"events": 0, "total_tokens": 0}
    return [(label, found.get(label, empty)) for label in labels]


def _bucket_start(moment: datetime, chars: int) -> datetime:
    fmt = _BUCKET_FORMATS[chars]
    return datetime.strptime(moment.strftime(fmt), fmt).replace(tzinfo=timezone.utc)


def _bars(points: List[Tuple[str, Any]], width: int = 720, height: int = 160) -> Dict[str, Any]:
    """A bar chart's geometry (drawn as SVG by templates/chart.html): numbers only, labels escaped there."""
    top = max((value or 0 for _, value in points), default=0)
    n = max(len(points), 1)
    slot = width / n
    bars = []
    for index, (label, value) in enumerate(points):
        h = 0.0 if not top else (value or 0) / top * (height - 20)
        w = max(min(slot * 0.8, 48), 1)  # a few bars stay bars, not slabs; centred under their HTML label
        bars.append({"x": round(index * slot + (slot - w) / 2, 2), "w": round(w, 2),
                     "y": round(height - h, 2), "h": round(h, 2), "label": label, "value": value or 0})  # fmt: skip
    return {"bars": bars, "width": width, "height": height, "top": top,
            "first": points[0][0] if points else "", "last": points[-1][0] if points else ""}  # fmt: skip


def _timeline(event: Dict[str, Any]) -> List[Dict[str, Any]]:
    """A multi-step event's ``spans[]`` as offsets in ms from the first stage's start (for a Gantt-like view)."""
    stages = [s for s in event.get("spans") or [] if isinstance(s, dict)]
    times = [(_parse(s.get("started_at")), _parse(s.get("ended_at"))) for s in stages]
    starts = [start for start, _ in times if start is not None]
    origin = min(starts) if starts else None
    ends = [end for _, end in times if end is not None]
    total = max(((max(ends) - origin).total_seconds() * 1000 if origin and ends else 0), 1)
    rows = []
    for stage, (start, end) in zip(stages, times):
        offset = (start - origin).total_seconds() * 1000 if start and origin else 0
        length = (end - start).total_seconds() * 1000 if start and end else 0
        rows.append({"stage": stage, "offset_ms": offset, "duration_ms": length,
                     "x": round(offset / total * 100, 2), "w": round(max(length / total * 100, 0.5), 2)})  # fmt: skip
    return rows


def _trace_ids(event: Dict[str, Any]) -> Dict[str, str]:
    """The OpenTelemetry ids the mapper kept in ``metadata.otel`` (trace, span, parent span)."""
    metadata = event.get("metadata")
    otel = metadata.get("otel") if isinstance(metadata, dict) else None
    if not isinstance(otel, dict):
        return {}
    return {name: str(otel[name]) for name in ("trace_id", "span_id", "parent_span_id") if otel.get(name)}


def _messages(event: Dict[str, Any]) -> List[Dict[str, str]]:
    """The conversation the mapper kept in ``metadata.gen_ai.messages``: role, text, and the rest as JSON."""
    metadata = event.get("metadata")
    gen_ai = metadata.get("gen_ai") if isinstance(metadata, dict) else None
    messages = gen_ai.get("messages") if isinstance(gen_ai, dict) else None
    if isinstance(messages, dict):  # the mapper's {"input": [...], "output": [...]}
        messages = [m for side in ("input", "output") if isinstance(messages.get(side), list) for m in messages[side]]
    shown = []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        rest = {key: value for key, value in message.items() if key not in ("role", "content")}
        shown.append({"role": str(message.get("role") or "?"),
                      "text": content if isinstance(content, str) else "" if content is None else _pretty(content),
                      "rest": _pretty(rest) if rest else ""})  # fmt: skip
    return shown


def _parse(value: Any) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _number(value: Any) -> bool:
    """Whether a value can be formatted as a number (absent fields arrive as None or Jinja's Undefined)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: Any) -> str:
    if not _number(value):
        return "–"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def _usd(value: Any) -> str:
    if not _number(value):
        return "–"
    if value and abs(value) < 0.0001:  # a single small call's provider cost must not read as zero
        return f"${value:.6f}"
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def _ms(value: Any) -> str:
    return f"{value:,.0f} ms" if _number(value) else "–"


def _pct(part: Any, whole: Any) -> str:
    return f"{100 * part / whole:.1f}%" if _number(part) and _number(whole) and whole else "–"


def _when(value: Any) -> str:
    """A stored UTC timestamp, to the second, as people read it."""
    return value[:19].replace("T", " ") if isinstance(value, str) else "–"


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode("utf-8")
