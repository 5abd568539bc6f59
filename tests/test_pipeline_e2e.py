"""Instrumented app → processor/exporter → local backend, in code and with zero code. Exact records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY, app_env, run_app, stored_events

EXPECTED = [
    {"model": "gpt-4o-mini-2024-07-18", "prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13,
     "prompt": "Hello from the e2e test", "answer": "Echo: Hello from the e2e test",
     "session_id": "conv-e2e", "end_user_id": "u-e2e", "user_id": "u-e2e", "user_metadata": {"channel": "e2e"}},
    {"model": "gpt-4o-mini-2024-07-18", "prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8,
     "prompt": "What is the weather in Paris?", "answer": '[tool call] get_weather({"city":"Paris"})',
     "user_metadata": {}},
    {"model": "text-embedding-3-small", "prompt_tokens": 4, "total_tokens": 4, "prompt": "embed these four words",
     "user_metadata": {}},
]  # fmt: skip

# What may differ between two runs of the same app: ids and times.
_RUN_SPECIFIC = ("request_id", "started_at", "finished_at", "latency_ms", "received_at", "key_fingerprint")


@pytest.fixture()
def backend() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[API_KEY]) as running:
        yield running


def comparable(record: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in _RUN_SPECIFIC}
    meta = dict(out["metadata"])
    otel = {k: v for k, v in meta.pop("otel").items() if k not in ("trace_id", "span_id", "parent_span_id")}
    otel["duplicate_spans"] = len(otel.get("duplicate_spans", []))
    gen_ai = {k: v for k, v in meta.pop("gen_ai").items() if k != "response_id"}
    out["metadata"] = {**meta, "otel": otel, "gen_ai": gen_ai}
    return out


def check(records: List[Dict[str, Any]], app_output: str) -> None:
    assert len(records) == len(EXPECTED), [r.get("prompt") for r in records]
    calls = json.loads(app_output)["calls"]
    for record, want in zip(records, EXPECTED):
        user_metadata = {k: v for k, v in record["metadata"].items() if k not in ("gen_ai", "otel")}
        assert user_metadata == want["user_metadata"]
        for field, value in want.items():
            if field != "user_metadata":
                assert record.get(field) == value, field
        for field in ("session_id", "answer", "completion_tokens"):
            if field not in want:
                assert field not in record, field
        assert record["mode"] == "sdk" and record["provider"] == "openai" and record["status"] == "ok"
        assert record["integration_id"] == "otel:e2e-app@2.0"
    assert records[0]["metadata"]["gen_ai"]["response_id"] == calls[0]["id"]
    for record in records:  # three instrumentations saw each call: one record, two folded duplicates
        assert len(record["metadata"]["otel"]["duplicate_spans"]) == 2


def test_code_path(backend: LocalBackend, fake_llm: str, tmp_path: Path) -> None:
    done = run_app("code", app_env(backend.url, fake_llm, str(tmp_path)))
    assert done.returncode == 0, done.stderr
    check(stored_events(backend.url), done.stdout)


def test_zero_code_path_gives_the_same_records(backend: LocalBackend, fake_llm: str, tmp_path: Path) -> None:
    env = app_env(backend.url, fake_llm, str(tmp_path), OTEL_TRACES_EXPORTER="promptwall", OTEL_LOGS_EXPORTER="promptwall")
    zero = run_app("zero", env)
    assert zero.returncode == 0, zero.stderr
    zero_records = stored_events(backend.url)
    check(zero_records, zero.stdout)
    with LocalBackend(api_keys=[API_KEY]) as other:
        code = run_app("code", app_env(other.url, fake_llm, str(tmp_path)))
        assert code.returncode == 0, code.stderr
        code_records = stored_events(other.url)
    assert [comparable(r) for r in zero_records] == [comparable(r) for r in code_records]


def test_zero_code_with_traces_only_lacks_only_log_content(backend: LocalBackend, fake_llm: str, tmp_path: Path) -> None:
    env = app_env(backend.url, fake_llm, str(tmp_path), OTEL_TRACES_EXPORTER="promptwall", OTEL_LOGS_EXPORTER="none")
    done = run_app("zero", env)
    assert done.returncode == 0, done.stderr
    records = stored_events(backend.url)
    assert [r["total_tokens"] for r in records] == [13, 8, 4]
    assert records[0]["session_id"] == "conv-e2e" and records[0]["metadata"]["channel"] == "e2e"
    # OpenInference keeps content on its spans; only what the official instrumentation logs is missing.
    assert records[0]["metadata"]["otel"]["scope"].startswith("openinference")


def test_fork_child_spans_are_exported(backend: LocalBackend, fake_llm: str, tmp_path: Path) -> None:
    done = run_app("code", app_env(backend.url, fake_llm, str(tmp_path)), "--fork")
    assert done.returncode == 0, done.stderr
    check(stored_events(backend.url), done.stdout)
