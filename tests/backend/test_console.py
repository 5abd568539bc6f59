"""The read side (/api/console/*) and the `promptwall-otel events|billing` commands, on a real backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY

EVENTS: List[Dict[str, Any]] = [
    {"request_id": "c-1", "session_id": "conv-a", "end_user_id": "alice", "model": "gpt-4o-mini",
     "started_at": "2026-04-26T10:00:00Z", "prompt": "hello", "answer": "hi there",
     "prompt_tokens": 10, "completion_tokens": 5, "metadata": {"feature": "chat", "tier": "pro"}},
    {"request_id": "c-2", "session_id": "conv-a", "end_user_id": "alice", "model": "gpt-4o-mini",
     "started_at": "2026-04-26T10:01:00Z", "prompt": "and then?", "answer": "then this",
     "prompt_tokens": 20, "completion_tokens": 10, "metadata": {"feature": "chat", "tier": "free"}},
    {"request_id": "c-3", "session_id": "conv-b", "end_user_id": "bob", "model": "claude-sonnet-4",
     "started_at": "2026-04-27T09:00:00Z", "prompt": "summarise", "answer": "short",
     "prompt_tokens": 300, "completion_tokens": 200, "metadata": {"feature": "summarize-pdf", "n": 3}},
    {"request_id": "c-4", "model": "gpt-4o-mini", "started_at": "2026-04-27T11:00:00Z",
     "total_tokens": 1000},
]  # fmt: skip


@pytest.fixture(scope="module")
def filled() -> Iterator[httpx.Client]:
    """Its own backend, so the figures are exact."""
    with LocalBackend(api_keys=[API_KEY]) as running:
        with httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            assert client.post("/v1/events", json={"events": EVENTS}).status_code == 200
            client.backend_url = running.url  # type: ignore[attr-defined]
            yield client


def ids(response: httpx.Response) -> List[str]:
    assert response.status_code == 200, response.text
    return [row["request_id"] for row in response.json()["requests"]]


def test_requests_newest_first_with_limit(filled: httpx.Client) -> None:
    assert ids(filled.get("/api/console/requests")) == ["c-4", "c-3", "c-2", "c-1"]
    assert ids(filled.get("/api/console/requests", params={"limit": 2})) == ["c-4", "c-3"]


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"session_id": "conv-a"}, ["c-2", "c-1"]),
        ({"end_user_id": "bob"}, ["c-3"]),
        ({"model": "gpt-4o-mini"}, ["c-4", "c-2", "c-1"]),
        ({"metadata.feature": "chat"}, ["c-2", "c-1"]),
        ({"metadata.feature": "chat", "metadata.tier": "pro"}, ["c-1"]),
        ({"metadata.n": "3"}, ["c-3"]),
        ({"metadata.feature": "nope"}, []),
    ],
)
def test_requests_filters(filled: httpx.Client, params: Dict[str, str], expected: List[str]) -> None:
    assert ids(filled.get("/api/console/requests", params=params)) == expected


def test_requests_return_the_stored_event(filled: httpx.Client) -> None:
    (row,) = filled.get("/api/console/requests", params={"end_user_id": "bob"}).json()["requests"]
    assert row["prompt"] == "summarise" and row["answer"] == "short"
    assert row["total_tokens"] == 500 and row["metadata"] == {"feature": "summarize-pdf", "n": 3}
    assert row["app"] == "app-1" and API_KEY not in str(row)


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1001"])
def test_bad_limit_is_400(filled: httpx.Client, limit: str) -> None:
    assert filled.get("/api/console/requests", params={"limit": limit}).status_code == 400


def test_sessions_list(filled: httpx.Client) -> None:
    sessions = filled.get("/api/console/sessions").json()["sessions"]
    assert sessions == [
        {"session_id": "conv-b", "turns": 1, "first_at": "2026-04-27T09:00:00.000000Z",
         "last_at": "2026-04-27T09:00:00.000000Z", "total_tokens": 500, "end_user_id": "bob"},
        {"session_id": "conv-a", "turns": 2, "first_at": "2026-04-26T10:00:00.000000Z",
         "last_at": "2026-04-26T10:01:00.000000Z", "total_tokens": 45, "end_user_id": "alice"},
    ]  # fmt: skip


def test_session_replay_in_order(filled: httpx.Client) -> None:
    body = filled.get("/api/console/sessions/conv-a").json()
    assert body["session_id"] == "conv-a"
    assert [(t["prompt"], t["answer"]) for t in body["turns"]] == [("hello", "hi there"), ("and then?", "then this")]
    assert filled.get("/api/console/sessions/missing").status_code == 404


def test_billing_at_30_usd_per_million(filled: httpx.Client) -> None:
    bill = filled.get("/api/console/billing").json()
    assert bill["rate_usd_per_million_tokens"] == 30.0
    assert bill["total_tokens"] == 15 + 30 + 500 + 1000
    assert bill["credit_usd"] == pytest.approx(1545 * 30 / 1e6)
    assert {row["model"]: row["total_tokens"] for row in bill["by_model"]} == {
        "claude-sonnet-4": 500, "gpt-4o-mini": 1045,
    }  # fmt: skip
    assert {row["day"]: row["credit_usd"] for row in bill["by_day"]} == {
        "2026-04-26": pytest.approx(45 * 30 / 1e6), "2026-04-27": pytest.approx(1500 * 30 / 1e6),
    }  # fmt: skip


def test_reads_need_a_key(filled: httpx.Client) -> None:
    url = filled.backend_url  # type: ignore[attr-defined]
    assert httpx.get(url + "/api/console/requests").status_code == 401
    assert httpx.get(url + "/api/console/billing", headers={"X-API-Key": "nope"}).status_code == 401
    assert httpx.get(url + "/healthz").status_code == 200


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "promptwall_otel", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_events_command_prints_a_table(filled: httpx.Client) -> None:
    url = filled.backend_url  # type: ignore[attr-defined]
    out = _cli("events", "--url", url, "--api-key", API_KEY, "--limit", "3").splitlines()
    assert out[0].split()[:3] == ["started", "(UTC)", "model"]
    assert len(out) == 2 + 3
    assert "claude-sonnet-4" in out[3] and "summarise" in out[3]
    assert "c-1" not in "\n".join(out)


def test_billing_command(filled: httpx.Client) -> None:
    url = filled.backend_url  # type: ignore[attr-defined]
    out = _cli("billing", "--url", url, "--api-key", API_KEY)
    assert out.startswith("4 events, 1545 tokens")
    assert "$0.046350" in out


def test_default_db_lives_in_user_data_dir(tmp_path: Path) -> None:
    from promptwall_otel.config import default_db_path

    assert default_db_path({"PROMPTWALL_LOCAL_DB": str(tmp_path / "x.db")}) == str(tmp_path / "x.db")
    assert default_db_path({}).endswith("promptwall-otel/events.db")
