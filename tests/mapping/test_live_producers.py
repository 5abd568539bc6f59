"""Real instrumentations of the real openai client against the fake LLM server: exact records.

Each (producer, content mode) runs in its own process (tests/mapping/live_driver.py),
since instrumentations read their settings once. Expected values come from
the fake server's deterministic answers and usage.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from promptwall_otel.record import validate_event

DRIVER = Path(__file__).resolve().parent / "live_driver.py"
GPT = "gpt-4o-mini-2024-07-18"
TOOL_ANSWER = '[tool call] get_weather({"city":"Paris"})'

# scenario -> records expected, in order (content fields checked only when captured)
EXPECTED: Dict[str, List[Dict[str, Any]]] = {
    "chat": [{"model": GPT, "prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14, "status": "ok",
              "prompt": "Say hello to PromptWall", "answer": "Echo: Say hello to PromptWall",
              "operation": "chat", "cost_usd": pytest.approx((9 * 0.15 + 5 * 0.6) / 1e6)}],
    "chat_stream": [{"model": GPT, "prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9, "status": "ok",
                     "prompt": "Stream a greeting please", "answer": "Echo: Stream a greeting please",
                     "operation": "chat"}],
    "tool_call": [
        {"model": GPT, "prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "status": "ok",
         "prompt": "What is the weather in Paris?", "answer": TOOL_ANSWER, "operation": "chat"},
        {"model": GPT, "prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16, "status": "ok",
         "prompt": "What is the weather in Paris?", "answer": "Tool said: Sunny, 22C", "operation": "chat"},
    ],
    "embeddings": [{"model": "text-embedding-3-small", "prompt_tokens": 4, "total_tokens": 4, "status": "ok",
                    "operation": "embeddings", "cost_usd": pytest.approx(4 * 0.02 / 1e6)}],
    "error_400": [{"model": "error-400", "status": "error", "error_code": "BadRequestError",
                   "prompt": "This will fail", "operation": "chat"}],
}  # fmt: skip

CASES = [
    ("openai-v2", "content-events", True),  # content arrives as log records only
    ("openai-v2", "latest-span-only", True),  # content as gen_ai.input/output.messages on the span
    ("openai-v2", "no-content", False),
    ("openllmetry", "content-on", True),
    ("openllmetry", "content-off", False),
    ("openinference", "content-on", True),
    ("openinference", "content-off", False),
    ("double", "v2-openinference", True),  # one call, two instrumentations: billed once
    ("double", "v2-openllmetry", True),
]


_RUNS: Dict[tuple, Dict[str, Any]] = {}


def drive(producer: str, mode: str, content: bool, fake_llm: str) -> Dict[str, Any]:
    """Records of one (producer, mode) run, computed once per test session."""
    key = (producer, mode)
    if key not in _RUNS:
        done = subprocess.run(
            [sys.executable, str(DRIVER), producer, mode, fake_llm], capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-4000:]
        _RUNS[key] = {"producer": producer, "content": content, "scenarios": json.loads(done.stdout)}
    return _RUNS[key]


@pytest.fixture(params=CASES, ids=lambda case: f"{case[0]}-{case[1]}")
def run(request: pytest.FixtureRequest, fake_llm: str) -> Dict[str, Any]:
    return drive(*request.param, fake_llm)


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_records_are_exact(run: Dict[str, Any], scenario: str) -> None:
    result = run["scenarios"][scenario]
    records = result["records"]
    expected = EXPECTED[scenario]
    assert len(records) == len(expected), [r["request_id"] for r in records]
    for record, want in zip(records, expected):
        assert validate_event(record) == []
        gen_ai = record["metadata"]["gen_ai"]
        assert gen_ai["operation"] == want["operation"]
        for field in ("model", "prompt_tokens", "completion_tokens", "total_tokens", "status", "cost_usd"):
            if field in want:
                assert record.get(field) == want[field], field
        for field in ("prompt_tokens", "completion_tokens"):
            if field not in want:
                assert field not in record
        if want["status"] == "error":
            assert record["error_code"].endswith(want["error_code"])
            assert "Fake bad request" in gen_ai["error"]["message"]
        assert record["provider"] == "openai"
        assert record["mode"] == "sdk"
        assert record["integration_id"] == "otel:live-test@1.2.3"
        assert record["latency_ms"] >= 0 and record["finished_at"] >= record["started_at"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["started_at"])
        if scenario == "embeddings":
            continue  # producers differ on whether they keep the embedded text; nothing billed depends on it
        if run["content"]:
            for field in ("prompt", "answer"):
                assert record.get(field) == want.get(field), field
            assert gen_ai["content_captured"] is True
        else:
            assert "prompt" not in record and "answer" not in record
            assert gen_ai["content_captured"] is False and "messages" not in gen_ai


def test_response_id_keys_calls(run: Dict[str, Any]) -> None:
    """Chat calls are keyed by the provider's response id; calls without one by trace and span."""
    chat = run["scenarios"]["chat"]
    (record,) = chat["records"]
    if "response_id" in record["metadata"]["gen_ai"]:
        assert record["metadata"]["gen_ai"]["response_id"] == chat["outcome"]["response_id"]
        assert re.fullmatch(r"gen-[0-9a-f]{40}", record["request_id"])
    (embedding,) = run["scenarios"]["embeddings"]["records"]
    otel = embedding["metadata"]["otel"]
    assert embedding["request_id"] == f"otel-{otel['trace_id']}-{otel['span_id']}"
    ids = [r["request_id"] for s in run["scenarios"].values() for r in s["records"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("mode", [mode for producer, mode, _ in CASES if producer == "double"])
def test_double_instrumentation_is_billed_once(mode: str, fake_llm: str) -> None:
    """Two instrumentations wrap one client call (parent and child spans): one record, merged."""
    run = drive("double", mode, True, fake_llm)
    for scenario, result in run["scenarios"].items():
        assert result["spans"] == 2 * len(EXPECTED[scenario]), scenario
        for record in result["records"]:
            assert len(record["metadata"]["otel"]["duplicate_spans"]) == 1
