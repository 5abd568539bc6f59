"""The PromptWall event record: its shape, its validation, its defaults.

One definition serves both sides of the wire: the exporter checks records
before they leave the process and the local backend checks them on arrival,
so the two can never disagree about what ``POST /v1/events`` accepts.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, TypedDict

__all__ = [
    "Event",
    "Stage",
    "MAX_BATCH",
    "MODES",
    "STATUSES",
    "validate_event",
    "apply_defaults",
    "parse_timestamp",
    "format_timestamp",
    "format_ns",
    "stored_form",
]

MAX_BATCH = 500
"""Most events one ``POST /v1/events`` may carry."""

MAX_ID_CHARS = 64
MAX_DIMENSION_CHARS = 256
MAX_SUMMARY_CHARS = 512

MODES = ("ingest", "proxy", "sdk", "vendor")
STATUSES = ("ok", "error", "blocked", "rewritten", "regenerated")
STAGE_STATUSES = ("ok", "error", "skip")

# Free-form string dimensions and their length caps.
_STRING_FIELDS = {
    "provider": MAX_DIMENSION_CHARS,
    "model": MAX_DIMENSION_CHARS,
    "use_case": MAX_DIMENSION_CHARS,
    "team_id": MAX_DIMENSION_CHARS,
    "integration_id": MAX_DIMENSION_CHARS,
    "end_user_id": MAX_DIMENSION_CHARS,
    "user_id": MAX_DIMENSION_CHARS,
    "session_id": MAX_DIMENSION_CHARS,
    "final_decision": MAX_ID_CHARS,
    "error_code": MAX_ID_CHARS,
}
_TEXT_FIELDS = ("prompt", "answer")
_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class Stage(TypedDict, total=False):
    """One pipeline stage of a multi-step event (``spans[]``)."""

    stage_name: str
    status: str
    started_at: str
    ended_at: str
    summary: str
    error_code: str
    metadata: Dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    retries: int


class Event(TypedDict, total=False):
    """A PromptWall event as ``POST /v1/events`` accepts it.

    Only ``request_id`` is required. ``prompt``, ``answer``, ``user_id`` and
    ``metadata`` come from Events mode; ``spans`` is the multi-step form.
    """

    request_id: str
    mode: str
    started_at: str
    finished_at: str
    provider: str
    model: str
    use_case: str
    team_id: str
    integration_id: str
    end_user_id: str
    user_id: str
    session_id: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    latency_ms: int
    status: str
    final_decision: str
    risk_score: float
    policy_hits: List[Any]
    error_code: str
    prompt: str
    answer: str
    metadata: Dict[str, Any]
    spans: List[Stage]


# --- timestamps -------------------------------------------------------------

_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)

# Exactly format_timestamp's output for years 1000..9999 (strftime pads no shorter year): such a
# string, once known to be a real moment, is already its own stored form.
_CANONICAL_RE = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def _is_canonical_moment(value: str) -> bool:
    """Whether ``value`` is in format_timestamp's form and a moment that exists (``parse_timestamp`` would
    give it back as it is), without building the aware datetime."""
    if not _CANONICAL_RE.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value[:26])
    except ValueError:  # a day or hour that does not exist
        return False
    return True


def parse_timestamp(value: Any) -> Optional[datetime]:
    """ISO-8601 string or epoch seconds to an aware UTC datetime; None if neither.

    Hand-parsed (the canonical form aside): the forms accepted are the API's,
    a fixed set, not whatever ``datetime.fromisoformat`` of the running
    Python takes (it grew between versions).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not 0 <= value < 253402300800:
            return None
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if not isinstance(value, str):
        return None
    if _CANONICAL_RE.fullmatch(value):  # what format_timestamp writes, as stored and as exporters send
        try:
            return datetime.fromisoformat(value[:26]).replace(tzinfo=timezone.utc)
        except ValueError:  # a day or hour that does not exist
            return None
    match = _ISO_RE.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micros, tzinfo=tz
        )
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc)


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds and a ``Z`` suffix, the form PromptWall sends."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_last_second: Tuple[int, str] = (-1, "")


def format_ns(unix_nanos: int) -> str:
    """Format OTel's nanoseconds since the epoch without a float round-trip.

    Spans of one batch share their second, so its formatted prefix is cached
    (one tuple, swapped atomically): ``strftime`` would otherwise be a
    measurable part of mapping a span.
    """
    global _last_second
    seconds, nanos = divmod(int(unix_nanos), 1_000_000_000)
    cached_second, prefix = _last_second
    if cached_second != seconds:
        prefix = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second = (seconds, prefix)
    # The six digits zero-padded as the tail of 1,000,000 + µs: cheaper than a format spec, twice per record.
    digits: str = str(1_000_000 + nanos // 1000)  # annotated: compiled, the slice and join are str operations
    return f"{prefix}{digits[1:]}Z"


# --- validation -------------------------------------------------------------


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_string(errors: List[str], name: str, value: Any, max_chars: int, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or len(value) > max_chars or (required and not value):
        bounds = f"1..{max_chars}" if required else f"at most {max_chars}"
        errors.append(f"{name} {'required' if required else 'must be a string'} ({bounds} chars)")


def _check_count(errors: List[str], name: str, value: Any) -> None:
    if value is not None and not (_is_int(value) and value >= 0):
        errors.append(f"{name} must be a non-negative integer")


def _check_timestamp(errors: List[str], name: str, value: Any) -> None:
    if value is not None and parse_timestamp(value) is None:
        errors.append(f"{name} must be ISO-8601 or epoch seconds")


def _check_enum(errors: List[str], name: str, value: Any, allowed: Sequence[str]) -> None:
    if value is not None and value not in allowed:
        errors.append(f"{name} must be one of {', '.join(allowed)}")


def _check_cost(errors: List[str], name: str, value: Any) -> None:
    if value is not None and not (_is_number(value) and value >= 0):
        errors.append(f"{name} must be a non-negative number")


def _validate_stage(errors: List[str], index: int, stage: Any) -> None:
    prefix = f"spans[{index}]."
    if not isinstance(stage, Mapping):
        errors.append(f"spans[{index}] must be an object")
        return
    _check_string(errors, prefix + "stage_name", stage.get("stage_name"), MAX_ID_CHARS, required=True)
    _check_enum(errors, prefix + "status", stage.get("status"), STAGE_STATUSES)
    _check_timestamp(errors, prefix + "started_at", stage.get("started_at"))
    _check_timestamp(errors, prefix + "ended_at", stage.get("ended_at"))
    _check_string(errors, prefix + "summary", stage.get("summary"), MAX_SUMMARY_CHARS)
    _check_string(errors, prefix + "error_code", stage.get("error_code"), MAX_ID_CHARS)
    if stage.get("metadata") is not None and not isinstance(stage.get("metadata"), Mapping):
        errors.append(prefix + "metadata must be an object")
    for name in (*_TOKEN_FIELDS, "retries"):
        _check_count(errors, prefix + name, stage.get(name))
    _check_cost(errors, prefix + "cost_usd", stage.get("cost_usd"))


# The checks of validate_event as one table, for its fast path: (kind, bound or allowed values).
_BOUNDED, _TEXT, _COUNT, _COST, _TIME, _ENUM, _RISK, _LIST, _OBJECT, _STAGES = range(10)
_FAST_RULES: Dict[str, Tuple[int, Any]] = {
    "request_id": (_BOUNDED, MAX_ID_CHARS),
    **{name: (_BOUNDED, max_chars) for name, max_chars in _STRING_FIELDS.items()},
    **{name: (_TEXT, None) for name in _TEXT_FIELDS},
    **{name: (_COUNT, None) for name in (*_TOKEN_FIELDS, "latency_ms")},
    "cost_usd": (_COST, None),
    "started_at": (_TIME, None),
    "finished_at": (_TIME, None),
    "mode": (_ENUM, MODES),
    "status": (_ENUM, STATUSES),
    "risk_score": (_RISK, None),
    "policy_hits": (_LIST, None),
    "metadata": (_OBJECT, None),
    "spans": (_STAGES, None),
}


def stored_form(event: Any, now: Optional[datetime] = None) -> Optional[Dict[str, Any]]:
    """``apply_defaults(event, now)`` if ``validate_event(event)`` finds nothing, in one pass; else None.

    None also means "not in the plain form this pass takes" (a float token
    count, a timestamp that is not already ISO-8601 UTC with microseconds,
    stages in ``spans``): then ask ``validate_event`` and ``apply_defaults``,
    which give the same answers the long way. The backend runs this on every
    event it receives: the two full passes parsed each timestamp four times
    and made ~30 calls per event, a third of ingest's cost.
    """
    if type(event) is not dict:
        return None
    request_id = event.get("request_id")
    if type(request_id) is not str or not 0 < len(request_id) <= MAX_ID_CHARS:
        return None
    rules = _FAST_RULES
    stored: Dict[str, Any] = {}
    for key, value in event.items():
        rule = rules.get(key)
        if rule is None or value is None:
            continue  # unknown fields and nulls are dropped
        kind, bound = rule
        if kind == _BOUNDED:
            if type(value) is not str or len(value) > bound:
                return None
        elif kind == _COUNT:
            if type(value) is not int or value < 0:
                return None
        elif kind == _TIME:
            if type(value) is not str or not _is_canonical_moment(value):
                return None
        elif kind == _TEXT:
            if type(value) is not str:
                return None
        elif kind == _ENUM:
            if value not in bound:
                return None
        elif kind == _COST:
            if not ((type(value) is float and math.isfinite(value)) or type(value) is int) or value < 0:
                return None
        elif kind == _RISK:
            if not ((type(value) is float and math.isfinite(value)) or type(value) is int) or not 0 <= value <= 1:
                return None
        elif kind == _LIST:
            if type(value) is not list:
                return None
        elif kind == _OBJECT:
            if type(value) is not dict:
                return None
        elif type(value) is not list or value:  # spans: stages are rare; the full check reads them
            return None
        stored[key] = value
    stored.setdefault("mode", "ingest")
    if "started_at" not in stored:
        stored["started_at"] = format_timestamp(now or datetime.now(timezone.utc))
    if "total_tokens" not in stored and ("prompt_tokens" in stored or "completion_tokens" in stored):
        stored["total_tokens"] = stored.get("prompt_tokens", 0) + stored.get("completion_tokens", 0)
    if "latency_ms" not in stored and "finished_at" in stored:
        started, finished = parse_timestamp(stored["started_at"]), parse_timestamp(stored["finished_at"])
        stored["latency_ms"] = max(0, round((finished - started).total_seconds() * 1000))  # type: ignore[operator]
    if "end_user_id" not in stored and "user_id" in stored:
        stored["end_user_id"] = stored["user_id"]
    return stored


def validate_event(event: Any) -> List[str]:
    """Every reason ``event`` would be rejected, in the seed's wording; [] if valid.

    Unknown fields are not errors: the server ignores them, as the API does.
    """
    if stored_form(event) is not None:
        return []
    return _errors_the_long_way(event)


def _errors_the_long_way(event: Any) -> List[str]:
    if not isinstance(event, Mapping):
        return ["event must be an object"]
    errors: List[str] = []
    _check_string(errors, "request_id", event.get("request_id"), MAX_ID_CHARS, required=True)
    _check_enum(errors, "mode", event.get("mode"), MODES)
    _check_enum(errors, "status", event.get("status"), STATUSES)
    _check_timestamp(errors, "started_at", event.get("started_at"))
    _check_timestamp(errors, "finished_at", event.get("finished_at"))
    for name, max_chars in _STRING_FIELDS.items():
        _check_string(errors, name, event.get(name), max_chars)
    for name in _TEXT_FIELDS:
        if event.get(name) is not None and not isinstance(event.get(name), str):
            errors.append(f"{name} must be a string")
    for name in (*_TOKEN_FIELDS, "latency_ms"):
        _check_count(errors, name, event.get(name))
    _check_cost(errors, "cost_usd", event.get("cost_usd"))
    risk = event.get("risk_score")
    if risk is not None and not (_is_number(risk) and 0.0 <= risk <= 1.0):
        errors.append("risk_score must be a number in 0.0..1.0")
    if event.get("policy_hits") is not None and not isinstance(event.get("policy_hits"), list):
        errors.append("policy_hits must be an array")
    if event.get("metadata") is not None and not isinstance(event.get("metadata"), Mapping):
        errors.append("metadata must be an object")
    spans = event.get("spans")
    if spans is not None:
        if not isinstance(spans, list):
            errors.append("spans must be an array")
        else:
            for index, stage in enumerate(spans):
                _validate_stage(errors, index, stage)
    return errors


# --- defaults ---------------------------------------------------------------

_KNOWN_FIELDS = frozenset(Event.__annotations__)

def apply_defaults(event: Mapping[str, Any], now: Optional[datetime] = None) -> Dict[str, Any]:
    """The stored form of a *valid* event: the API's documented defaults filled in.

    ``mode`` defaults to ingest, ``started_at`` to now, ``total_tokens`` to the
    sum of the splits, ``latency_ms`` to the timestamps' difference; timestamps
    become ISO-8601 UTC; integral floats become ints; unknown fields and nulls
    are dropped. ``end_user_id`` falls back to Events mode's ``user_id``.
    Cost is never estimated here.
    """
    fast = stored_form(event, now)
    return fast if fast is not None else _defaults_the_long_way(event, now)


def _defaults_the_long_way(event: Mapping[str, Any], now: Optional[datetime]) -> Dict[str, Any]:
    stored: Dict[str, Any] = {k: v for k, v in event.items() if k in _KNOWN_FIELDS and v is not None}
    stored.setdefault("mode", "ingest")
    started = parse_timestamp(stored.get("started_at")) or now or datetime.now(timezone.utc)
    stored["started_at"] = format_timestamp(started)
    finished = parse_timestamp(stored.get("finished_at"))
    if finished is not None:
        stored["finished_at"] = format_timestamp(finished)
    for name in (*_TOKEN_FIELDS, "latency_ms"):
        if name in stored:
            stored[name] = int(stored[name])
    if "total_tokens" not in stored and ("prompt_tokens" in stored or "completion_tokens" in stored):
        stored["total_tokens"] = stored.get("prompt_tokens", 0) + stored.get("completion_tokens", 0)
    if "latency_ms" not in stored and finished is not None:
        stored["latency_ms"] = max(0, round((finished - started).total_seconds() * 1000))
    if "end_user_id" not in stored and "user_id" in stored:
        stored["end_user_id"] = stored["user_id"]
    return stored
