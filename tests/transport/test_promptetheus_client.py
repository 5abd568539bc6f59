"""Agent runs through the one sending worker to the real local backend's Promptetheus routes, faults included.

Whatever the network does, every run ends stored with each event once: a
retried run's second create is a 409 and its events are skipped by their
idempotency keys, so nothing is doubled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from promptwall_otel.backend import LocalBackend
from promptwall_otel.stats import ExportStats
from promptwall_otel.transport import SendingWorker, Spool
from promptwall_otel.transport.promptetheus import PromptetheusClient
from tests.faults.fault_server import FaultServer, reset, slow, status

KEY = "pt_worker_key"


@pytest.fixture()
def server() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[KEY]) as running:
        yield running


def run_line(trace_id: str, steps: int, bad_step: int = -1) -> bytes:
    events = [{"type": "llm_call", "session_id": trace_id, "timestamp": f"2026-01-01T00:00:{i:02d}Z",
               "seq": -1 if i == bad_step else i, "idempotency_key": f"{trace_id}:{i}",
               "payload": {"model": "m", "input_tokens": 10, "output_tokens": 2}} for i in range(steps)]  # fmt: skip
    return json.dumps({"trace": {"id": trace_id, "agent": "a", "user_goal": "g"}, "events": events}).encode()


def stored(server: LocalBackend) -> Dict[str, List[int]]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as api:
        ids = [t["id"] for t in api.get("/api/traces", params={"limit": 1000}).json()["traces"]]
        return {i: [e["seq"] for e in api.get(f"/api/traces/{i}").json()["events"]] for i in ids}


def worker(url: str, tmp_path: Path, key: str = KEY) -> SendingWorker:
    stats = ExportStats()
    return SendingWorker(PromptetheusClient(url, key), Spool(str(tmp_path / "spool"), 1 << 30), stats,
                         api_key_env="PROMPTETHEUS_API_KEY", name="promptetheus-test")  # fmt: skip


def test_runs_stored_once_and_a_resend_doubles_nothing(server: LocalBackend, tmp_path: Path) -> None:
    sending = worker(server.url, tmp_path)
    lines = [run_line(f"run-{i}", 3) for i in range(20)] + [run_line("run-bad", 3, bad_step=1)]
    sending.offer(lines)
    assert sending.flush(10)
    sending.offer(lines)  # as a replay would
    assert sending.flush(10)
    sending.close(5)
    counts = sending.stats.snapshot()
    # A run with a refused step counts as rejected (logged with the step's reason), each time it is sent.
    assert counts["exported"] == 20 and counts["duplicates"] == 20 and counts["rejected"] == 2, counts
    runs = stored(server)
    assert len(runs) == 21 and all(runs[f"run-{i}"] == [0, 1, 2] for i in range(20))
    assert runs["run-bad"] == [0, 2]  # the valid steps of a run with one refused step are kept


def test_faults_lose_nothing_and_double_nothing(server: LocalBackend, tmp_path: Path) -> None:
    with FaultServer(server.url, faulted=lambda path: path.startswith("/api/traces")) as proxy:
        proxy.script(status(503), reset(), status(429, retry_after="1"), slow(3.0, then_forward=True), status(500),
                     reset(), status(502))  # fmt: skip
        sending = worker(proxy.url, tmp_path)
        sending.offer([run_line(f"run-{i}", 4) for i in range(30)])
        deadline = time.monotonic() + 60
        while not sending.flush(1) and time.monotonic() < deadline:  # each outage answer backs off: try again
            time.sleep(0.2)
        sending.close(10)
        assert len(proxy.requests) >= 7  # every scripted fault was met
    runs = stored(server)
    assert sorted(runs) == sorted(f"run-{i}" for i in range(30))
    assert all(seqs == [0, 1, 2, 3] for seqs in runs.values()), runs
    counts = sending.stats.snapshot()
    assert counts["exported"] + counts["duplicates"] >= 30 and counts["dead_lettered"] == 0 and counts["dropped"] == 0


def test_a_wrong_key_keeps_the_runs_until_the_key_is_right(server: LocalBackend, tmp_path: Path) -> None:
    refused = worker(server.url, tmp_path, key="not-the-key")
    refused.offer([run_line("kept-1", 2), run_line("kept-2", 2)])
    refused.flush(5)
    refused.close(2)
    assert stored(server) == {} and refused.stats.snapshot()["spooled"] == 2
    fixed = worker(server.url, tmp_path)  # the next run, same spool, the right key
    assert fixed.flush(10)
    fixed.close(2)
    assert stored(server) == {"kept-1": [0, 1], "kept-2": [0, 1]}
