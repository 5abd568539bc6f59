"""The one validation function both sides use, and its timestamp handling."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptwall_otel.record import (
    Event,
    _defaults_the_long_way,
    _errors_the_long_way,
    apply_defaults,
    format_ns,
    parse_timestamp,
    stored_form,
    validate_event,
)


@pytest.mark.parametrize(
    "event, errors",
    [
        ({"request_id": "a"}, []),
        ({}, ["request_id required (1..64 chars)"]),
        ({"request_id": 5}, ["request_id required (1..64 chars)"]),
        ("nope", ["event must be an object"]),
        ({"request_id": "a", "status": "fine"}, ["status must be one of ok, error, blocked, rewritten, regenerated"]),
        ({"request_id": "a", "prompt_tokens": 1.5}, ["prompt_tokens must be a non-negative integer"]),
        ({"request_id": "a", "prompt_tokens": True}, ["prompt_tokens must be a non-negative integer"]),
        ({"request_id": "a", "prompt_tokens": 7.0, "latency_ms": 3}, []),
        ({"request_id": "a", "cost_usd": -0.1}, ["cost_usd must be a non-negative number"]),
        ({"request_id": "a", "cost_usd": float("nan")}, ["cost_usd must be a non-negative number"]),
        ({"request_id": "a", "model": "m" * 257}, ["model must be a string (at most 256 chars)"]),
        ({"request_id": "a", "metadata": []}, ["metadata must be an object"]),
        ({"request_id": "a", "policy_hits": {}}, ["policy_hits must be an array"]),
        ({"request_id": "a", "prompt": 3}, ["prompt must be a string"]),
        ({"request_id": "a", "spans": [{"stage_name": "retrieve", "status": "ok", "retries": 1}]}, []),
        (
            {"request_id": "a", "spans": [{"status": "maybe", "summary": "s" * 513}, 3]},
            [
                "spans[0].stage_name required (1..64 chars)",
                "spans[0].status must be one of ok, error, skip",
                "spans[0].summary must be a string (at most 512 chars)",
                "spans[1] must be an object",
            ],
        ),
    ],
)
def test_validate_event(event: Any, errors: List[str]) -> None:
    assert validate_event(event) == errors


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-04-26T10:00:00Z", "2026-04-26T10:00:00+00:00"),
        ("2026-04-26T10:00:00.123456789Z", "2026-04-26T10:00:00.123456+00:00"),
        ("2026-04-26T12:00:00+02:00", "2026-04-26T10:00:00+00:00"),
        ("2026-04-26 10:00", "2026-04-26T10:00:00+00:00"),
        (1777197600, "2026-04-26T10:00:00+00:00"),
        (1777197600.5, "2026-04-26T10:00:00.500000+00:00"),
    ],
)
def test_parse_timestamp(value: Any, expected: str) -> None:
    moment = parse_timestamp(value)
    assert moment is not None and moment.isoformat() == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", True, None, -1, float("inf"), [1]])
def test_parse_timestamp_rejects(value: Any) -> None:
    assert parse_timestamp(value) is None


def test_format_ns_keeps_microseconds_exact() -> None:
    assert format_ns(1777197600_123456789) == "2026-04-26T10:00:00.123456Z"


def test_apply_defaults() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    stored: Dict[str, Any] = apply_defaults({"request_id": "a", "completion_tokens": 4.0, "extra": 1}, now=now)
    assert stored == {
        "request_id": "a",
        "mode": "ingest",
        "started_at": "2026-01-02T03:04:05.000000Z",
        "completion_tokens": 4,
        "total_tokens": 4,
    }


# The one-pass form the backend uses for every event must agree with the long way, field by field.
_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3), st.text(min_size=60, max_size=70), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from(["2026-04-26T10:00:00.123456Z", "2026-02-30T10:00:00.000000Z", "2026-04-26T10:00:00Z",
                     "0999-04-26T10:00:00.000000Z", "2026-04-26t10:00:00.000000z", "ingest", "ok", "error",
                     "２026-04-26T10:00:00.000000Z", 1777197600, 0.5]),
)  # fmt: skip
_fields = st.sampled_from([*Event.__annotations__, "unknown"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_fields, _values, max_size=8), st.sampled_from(["a", "", None, 5, "x" * 65]),
       st.lists(st.fixed_dictionaries({"stage_name": st.just("s")}), max_size=1))  # fmt: skip
def test_one_pass_agrees_with_the_long_way(event: Dict[str, Any], request_id: Any, spans: List[Any]) -> None:
    event["request_id"] = request_id
    if spans:
        event["spans"] = spans
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    errors = _errors_the_long_way(event)
    assert validate_event(event) == errors
    if not errors:
        assert apply_defaults(event, now) == _defaults_the_long_way(event, now)
        fast = stored_form(event, now)
        assert fast is None or fast == _defaults_the_long_way(event, now)


def test_one_pass_takes_an_exporter_shaped_event() -> None:
    event = {"request_id": "r1", "mode": "sdk", "model": "gpt-4o-mini", "provider": "openai", "status": "ok",
             "started_at": "2026-04-26T10:00:00.000000Z", "finished_at": "2026-04-26T10:00:01.200000Z",
             "prompt_tokens": 850, "completion_tokens": 120, "cost_usd": 0.0003, "risk_score": 0, "user_id": "u",
             "prompt": "p", "answer": "a", "metadata": {"k": [1]}, "policy_hits": [], "spans": [], "extra": 1}  # fmt: skip
    fast = stored_form(event)
    assert fast is not None and fast == _defaults_the_long_way(event, None)
    assert fast["latency_ms"] == 1200 and fast["total_tokens"] == 970 and fast["end_user_id"] == "u"
