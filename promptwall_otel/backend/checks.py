"""What the local backend's storage can hold, checked per event before anything is written.

``promptwall_otel.validate_event`` says what the API accepts; this says what
SQLite, its JSON functions and a JSON reply can carry back out, so that an
event accepted once can never break a later read (for its App or any other):

- integers anywhere fit SQLite's signed 64 bits (:func:`beyond_64_bits` finds the ones orjson
  would have rounded to floats, before anything else reads the body); token counts and
  ``latency_ms`` are at most :data:`MAX_COUNT` (2**53 - 1, exact in every
  JSON parser), ``total_tokens`` computed from the splits included, and
  ``cost_usd`` at most :data:`MAX_COST_USD`. Sums are taken with SQLite's
  ``TOTAL()`` (floating point), so no number of events can overflow a sum;
- numbers are finite (``NaN``/``Infinity`` are not JSON);
- strings are valid Unicode (no lone surrogates), keys included;
- JSON values nest at most :data:`MAX_DEPTH` deep (SQLite's JSON functions
  stop at 1000, the reply encoder earlier);
- ``prompt`` and ``answer`` are at most :data:`MAX_TEXT_CHARS` characters;
  ``metadata``, ``spans`` and ``policy_hits`` at most :data:`MAX_JSON_BYTES`
  bytes each as stored; all of them well above the exporter's 32 KiB
  content default.
"""

from __future__ import annotations

import math
from typing import Any, List

MAX_COUNT = 2**53 - 1
MAX_INT = 2**63 - 1
_INT64_MIN, _INT64_END = -(2**63), 2**63
MAX_DEPTH = 32
MAX_TEXT_CHARS = 1024 * 1024
MAX_JSON_BYTES = 256 * 1024
MAX_COST_USD = 1e12

_COUNT_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "latency_ms")
_JSON_FIELDS = ("metadata", "spans", "policy_hits")
_TEXT_FIELDS = ("prompt", "answer")


def beyond_64_bits(payload: Any) -> bool:
    """Whether any number in ``payload`` may be outside the signed 64-bit range: an integer out of it, or a
    float of that size (what orjson makes of such an integer); iterative, as orjson nests deeper than
    Python's recursion limit."""
    pending = [payload]
    while pending:
        value = pending.pop()
        kind = type(value)
        if kind is dict:
            pending.extend(value.values())
        elif kind is list:
            pending.extend(value)
        elif kind is float and not _INT64_MIN < value < _INT64_END:  # -2**63 - 1 rounds to the float -2**63
            return True
        elif kind is int and not _INT64_MIN <= value < _INT64_END:
            return True
    return False


class NonFinite:
    """Stands for a ``NaN``/``Infinity`` literal while parsing, so the event, not the body, is refused."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _Bad(Exception):
    """A value storage cannot hold; ``path`` grows as the walk unwinds, so it costs nothing unless raised."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: List[str] = []


def _walk(value: Any, depth: int) -> int:
    """Check one JSON value (``depth`` levels down); returns its approximate stored size in bytes."""
    kind = type(value)
    if kind is str:
        if value.isascii():
            return len(value) + 2
        try:
            return len(value.encode("utf-8")) + 2
        except UnicodeEncodeError:
            raise _Bad("is not valid Unicode (lone surrogate)") from None
    if kind is int:
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise _Bad("is an integer outside the signed 64-bit range")
        return 20
    if kind is float:
        if not math.isfinite(value):
            raise _Bad("is not a finite number")
        return 24
    if kind is bool or value is None:
        return 5
    if kind is NonFinite:
        raise _Bad(f"is {value.literal}, not a finite number")
    if kind is dict or kind is list:
        if depth >= MAX_DEPTH:
            raise _Bad(f"nests deeper than {MAX_DEPTH} levels")
        size = 2
        if kind is dict:
            for key, item in value.items():
                try:
                    size += _walk(key, depth + 1) + _walk(item, depth + 1)
                except _Bad as bad:
                    bad.path.append("." + _short(key))
                    raise
        else:
            for index, item in enumerate(value):
                try:
                    size += _walk(item, depth + 1)
                except _Bad as bad:
                    bad.path.append(f"[{index}]")
                    raise
        return size
    raise _Bad("has an unsupported type")


def _short(key: Any) -> str:
    text = key if isinstance(key, str) else repr(key)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 40 else text[:39] + "…"


def _number_errors(key: str, value: Any) -> List[str]:
    if key in _COUNT_FIELDS and abs(value) > MAX_COUNT:
        return [f"{key} must be at most {MAX_COUNT}"]
    if key == "cost_usd" and abs(value) > MAX_COST_USD:
        return [f"cost_usd must be at most {MAX_COST_USD:.0e}"]
    return []


def storage_errors(event: Any, strict_json: bool = False) -> List[str]:
    """Reasons the store could not hold ``event`` faithfully; [] if it can. Run before ``validate_event``.

    ``strict_json``: the event came from orjson and holds no number outside
    the signed 64-bit range (``server.parse_body``), so every string and key
    is valid Unicode, every number finite and every integer one SQLite can
    hold: only nesting, sizes and ranges are left to check, and scalars need
    no walk.
    """
    if not isinstance(event, dict):
        return []
    errors: List[str] = []
    for key, value in event.items():
        kind = type(value)
        if strict_json and kind is not dict and kind is not list and key not in _JSON_FIELDS:
            # Scalars: only the size and range rules can fail (cheap tests first, the rule's own after).
            if kind is str:
                if len(value) > MAX_TEXT_CHARS and key in _TEXT_FIELDS:
                    errors.append(f"{key} exceeds {MAX_TEXT_CHARS} characters")
            elif (kind is int or kind is float) and not -MAX_COST_USD <= value <= MAX_COST_USD:
                errors.extend(_number_errors(key, value))
            continue
        try:
            if not strict_json:
                _walk(key, 0)
            size = _walk(value, 0)
        except _Bad as bad:
            errors.append(f"{_short(key)}{''.join(reversed(bad.path))} {bad.reason}")
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            errors.extend(_number_errors(key, value))
        elif key in _TEXT_FIELDS and isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            errors.append(f"{key} exceeds {MAX_TEXT_CHARS} characters")
        elif key in _JSON_FIELDS and size > MAX_JSON_BYTES:
            errors.append(f"{key} exceeds {MAX_JSON_BYTES} bytes")
    spans = event.get("spans")
    if isinstance(spans, list):
        for index, stage in enumerate(spans):
            if isinstance(stage, dict):
                for name in _COUNT_FIELDS[:3]:
                    value = stage.get(name)
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_COUNT:
                        errors.append(f"spans[{index}].{name} must be at most {MAX_COUNT}")
    if not errors and "total_tokens" not in event:
        split = [event.get(name) for name in ("prompt_tokens", "completion_tokens")]
        if sum(v for v in split if isinstance(v, (int, float)) and not isinstance(v, bool)) > MAX_COUNT:
            errors.append(f"prompt_tokens + completion_tokens must be at most {MAX_COUNT}")
    return errors
