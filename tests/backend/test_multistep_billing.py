"""A multi-step event (``spans[]``) is billed by its own counts, never by its stages' on top.

The API bills "the prompt_tokens + completion_tokens you send us" per event and
says nothing of stage tokens; the PromptWall SDK sends usage on stages for
display. So the local backend stores ``spans[]`` as sent and bills the event's
counts only: a run whose stages repeat its calls' usage is billed once.
"""

from __future__ import annotations

import uuid

from promptwall_otel.backend import LocalBackend

import httpx

KEY = "pw_multistep_billing"


def test_stage_tokens_are_stored_and_never_billed_on_top() -> None:
    stage = {"stage_name": "llm:gpt-4o-mini", "status": "ok", "started_at": "2026-12-01T10:00:00Z",
             "ended_at": "2026-12-01T10:00:01Z", "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    tool = {"stage_name": "tool:lookup", "status": "error", "error_code": "timeout", "metadata": {"kind": "tool"}}
    run = {"request_id": f"run-{uuid.uuid4().hex}", "model": "gpt-4o-mini", "prompt_tokens": 20,
           "completion_tokens": 10, "spans": [stage, tool, stage]}  # fmt: skip
    only_stages = {"request_id": f"run-{uuid.uuid4().hex}", "spans": [stage]}
    with LocalBackend(api_keys=[KEY]) as backend:
        with httpx.Client(base_url=backend.url, headers={"X-API-Key": KEY}, timeout=10) as api:
            assert api.post("/v1/events", json={"events": [run, only_stages]}).json()["accepted"] == 2
            bill = api.get("/api/console/billing").json()
            assert (bill["events"], bill["prompt_tokens"], bill["completion_tokens"], bill["total_tokens"]) == (2, 20, 10, 30)
            assert bill["credit_usd"] == 30 * 30.0 / 1_000_000
            stored = {e["request_id"]: e for e in api.get("/api/console/requests").json()["requests"]}
            assert stored[run["request_id"]]["spans"] == [stage, tool, stage], "spans[] stored as sent"
            assert "total_tokens" not in stored[only_stages["request_id"]], "stage usage never becomes the event's"
