"""The one validation function both sides use, and its timestamp handling."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, List

import pytest

from promptwall_otel.record import apply_defaults, format_ns, parse_timestamp, validate_event


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
