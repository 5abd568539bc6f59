"""Both targets from one processor: a real agent app feeds PromptWall and Promptetheus at once.

The agent app (util-genai agent and tool spans, the real openai client under
three instrumentations, the fake LLM) runs with ``PROMPTWALL_TARGETS=
promptwall,promptetheus`` against one real backend that answers both APIs,
once per PromptWall mode (calls, or runs grouped), each mode in Apps of its
own. Checked at the server: PromptWall's bill is the provider's usage once;
Promptetheus has one trace per run and one per call outside a run, the steps
in start order, tokens once; and a retry storm in front of Promptetheus (the
fault proxy: 5xx, resets, answers lost after the write) doubles nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from promptwall_otel.backend import LocalBackend
from tests.faults.fault_server import FaultServer, reset, slow, status

ROOT = Path(__file__).resolve().parents[2]
PW = {False: "pw_calls", True: "pw_runs"}
PT = {False: "pt_calls", True: "pt_runs"}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[*PW.values(), *PT.values()]) as running:
        yield running


def run_app(promptwall_url: str, promptetheus_url: str, llm: str, group: bool, spool: Path, **extra: str) -> List[Dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENAI_BASE_URL=llm + "/v1", OPENAI_API_KEY="sk-fake",
               OTEL_METRICS_EXPORTER="none", RUN_MARKER=uuid.uuid4().hex, PROMPTWALL_SPOOL_DIR=str(spool),
               PROMPTWALL_TARGETS="promptwall,promptetheus", PROMPTWALL_GROUP_AGENT_RUNS=str(group).lower(),
               PROMPTWALL_API_KEY=PW[group], PROMPTWALL_BASE_URL=promptwall_url,
               PROMPTETHEUS_API_URL=promptetheus_url, PROMPTETHEUS_API_KEY=PT[group],
               PROMPTETHEUS_PROJECT_ID="proj_weather", **extra)  # fmt: skip
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "apps" / "agent_app.py"), "2"], env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert PT[group] not in done.stderr and PW[group] not in done.stderr, "a key in the app's log"
    return json.loads(done.stdout.strip().splitlines()[-1])


def traces(server: LocalBackend, key: str) -> List[Dict[str, Any]]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as api:
        listed = api.get("/api/traces", params={"limit": 1000}).json()["traces"]
        return [api.get(f"/api/traces/{t['id']}").json() for t in listed]


def bill(server: LocalBackend, key: str) -> Dict[str, Any]:
    return httpx.get(server.url + "/api/console/billing", headers={"X-API-Key": key}).json()


def promptwall_ids(server: LocalBackend, key: str) -> List[str]:
    body = httpx.get(server.url + "/api/console/requests", params={"limit": 1000}, headers={"X-API-Key": key}).json()
    return [e["request_id"] for e in body["requests"]]


def check(server: LocalBackend, group: bool, seen: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """What both backends hold for one mode, against what the provider reported to the client."""
    paid = bill(server, PW[group])
    assert paid["prompt_tokens"] == sum(c["prompt_tokens"] for c in seen)
    assert paid["completion_tokens"] == sum(c["completion_tokens"] for c in seen)

    stored = traces(server, PT[group])
    runs = sorted((t for t in stored if t["id"].startswith("run-")), key=lambda t: t["user_goal"])
    alone = [t for t in stored if not t["id"].startswith("run-")]
    assert len(runs) == 2 and len(alone) == 1, [t["id"] for t in stored]
    for index, trace in enumerate(runs):
        assert trace["agent"] == "weather agent" and trace["project_id"] == "proj_weather"
        assert trace["user_goal"] == f"What is the weather in Paris? (run {index})"
        events = trace["events"]
        assert [e["type"] for e in events] == ["user_message", "llm_call", "tool_call", "llm_call"]
        assert [e["seq"] for e in events] == [0, 1, 2, 3]
        assert [e["timestamp"] for e in events[1:]] == sorted(e["timestamp"] for e in events[1:])
        assert len({e["idempotency_key"] for e in events}) == 4
        assert events[0]["payload"]["content"] == trace["user_goal"] and events[0]["session_id"] == "chat-42"
        assert events[2]["payload"]["name"] == "tool:get_weather"
        mine = [c for c in seen if c["run"] == index]
        calls = [e["payload"] for e in events if e["type"] == "llm_call"]
        assert [(c["input_tokens"], c["output_tokens"]) for c in calls] == \
            [(m["prompt_tokens"], m["completion_tokens"]) for m in mine]  # fmt: skip
        assert all(c["model"].startswith("gpt-4o-mini") and c["latency_ms"] >= 0 for c in calls), calls
        if not group:  # PromptWall holds each call: the llm_call names it
            assert {c["prompt_ref"] for c in calls} <= set(promptwall_ids(server, PW[group]))
        else:  # PromptWall holds the run: the trace is named after it
            assert trace["id"] in promptwall_ids(server, PW[group])
    (single,) = alone
    assert single["user_goal"] == "Hi alone" and [e["type"] for e in single["events"]] == ["user_message", "llm_call"]
    assert single["id"] in promptwall_ids(server, PW[group])
    # Tokens once: every llm_call together is the provider's usage.
    calls = [e["payload"] for t in stored for e in t["events"] if e["type"] == "llm_call"]
    assert sum(c["input_tokens"] for c in calls) == sum(c["prompt_tokens"] for c in seen)
    assert sum(c["output_tokens"] for c in calls) == sum(c["completion_tokens"] for c in seen)
    return stored


def shape(stored: List[Dict[str, Any]]) -> List[Any]:
    """A mode-independent view of the Promptetheus traces: goals, step types and tokens."""
    return sorted((t["user_goal"], [(e["type"], e["payload"].get("input_tokens"), e["payload"].get("output_tokens"))
                                     for e in t["events"]]) for t in stored)  # fmt: skip


def test_one_processor_feeds_both_targets_in_both_modes(server: LocalBackend, fake_llm: str, tmp_path: Path) -> None:
    by_mode = {}
    for group in (False, True):
        seen = run_app(server.url, server.url, fake_llm, group, tmp_path / str(group))
        by_mode[group] = check(server, group, seen)
    # Promptetheus sees runs whatever PromptWall's mode; only ids and timestamps differ between the two runs.
    assert [goal for goal, _ in shape(by_mode[False])] == [goal for goal, _ in shape(by_mode[True])]
    assert [[kind for kind, *_ in steps] for _, steps in shape(by_mode[False])] == \
        [[kind for kind, *_ in steps] for _, steps in shape(by_mode[True])]  # fmt: skip


def test_a_retry_storm_in_front_of_promptetheus_doubles_nothing(fake_llm: str, tmp_path: Path) -> None:
    with LocalBackend(api_keys=[PW[True], PT[True]]) as fresh, \
            FaultServer(fresh.url, faulted=lambda path: path.startswith("/api/traces")) as proxy:  # fmt: skip
        # Answers lost after the write (slow past the client's 1 s timeout), resets, 5xx: each makes the
        # worker send a run again that the server may already hold.
        proxy.script(*[fault for _ in range(4) for fault in (slow(1.5), status(503), reset(), slow(1.5), status(500))])
        seen = run_app(fresh.url, proxy.url, fake_llm, True, tmp_path / "storm", OTEL_EXPORTER_PROMPTWALL_TIMEOUT="1")
        # What the app's exit left in its Promptetheus spool goes out with the operator's replay.
        env = dict(os.environ, PYTHONPATH=str(ROOT), PROMPTETHEUS_API_URL=proxy.url, PROMPTETHEUS_API_KEY=PT[True])
        replay = subprocess.run([sys.executable, "-m", "promptwall_otel", "spool", "replay", "--dir",
                                 str(tmp_path / "storm" / "promptetheus"), "--timeout", "60"], env=env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert sum(1 for r in proxy.requests if r.fault != "forward") >= 10, "the storm happened"
        check(fresh, True, seen)


def test_zero_code_sends_to_both_targets(fake_llm: str, tmp_path: Path) -> None:
    from tests.conftest import API_KEY, app_env, run_app, stored_events

    with LocalBackend(api_keys=[API_KEY, PT[False]]) as fresh:
        env = app_env(fresh.url, fake_llm, str(tmp_path), OTEL_TRACES_EXPORTER="promptwall,promptetheus",
                      OTEL_LOGS_EXPORTER="promptwall", PROMPTETHEUS_API_URL=fresh.url, PROMPTETHEUS_API_KEY=PT[False])
        done = run_app("zero", env)
        assert done.returncode == 0, done.stderr
        records = stored_events(fresh.url)
        stored = traces(fresh, PT[False])
    # Three calls (each seen by three instrumentations): three records, three one-step traces, named alike.
    assert len(records) == 3 and len(stored) == 3
    assert sorted(t["id"] for t in stored) == sorted(r["request_id"] for r in records)
    by_id = {r["request_id"]: r for r in records}
    for trace in stored:
        record = by_id[trace["id"]]
        (call,) = [e["payload"] for e in trace["events"] if e["type"] == "llm_call"]
        assert (call["input_tokens"], call["output_tokens"]) == (record["prompt_tokens"], record.get("completion_tokens", 0))
        assert trace["agent"] == "e2e-app" and trace["user_goal"] == record["prompt"]
