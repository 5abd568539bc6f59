"""The receiver forwards to Promptetheus too: every tenant's calls, as one-step runs, to the operator's key."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from promptwall_otel.backend import LocalBackend
from promptwall_otel.promptetheus import Settings
from promptwall_otel.receiver.app import Receiver
from tests.promptetheus.test_live import traces
from tests.receiver.test_receiver import chat_request, wait_for


def test_the_receiver_forwards_calls_to_both_targets(tmp_path: Path) -> None:
    with LocalBackend(api_keys=["pk-a", "pk-b", "pt-operator"]) as server:
        settings = Settings(server.url, "pt-operator", "proj_collector")
        with Receiver(server.url, "127.0.0.1:0", None, correlation_wait_s=0.2, spool_root=str(tmp_path),
                      promptetheus=settings) as receiver:  # fmt: skip
            for key, rid in (("pk-a", "chatcmpl-recv-a-0001"), ("pk-b", "chatcmpl-recv-b-0001"),
                             ("pk-a", "chatcmpl-recv-a-0002")):  # fmt: skip
                response = httpx.post(receiver.http_url + "/v1/traces", content=chat_request(rid),
                                      headers={"Content-Type": "application/x-protobuf", "X-API-Key": key})  # fmt: skip
                assert response.status_code == 200
            records = wait_for(server.url, 2, key="pk-a") + wait_for(server.url, 1, key="pk-b")
            deadline = time.monotonic() + 20
            while len(traces(server, "pt-operator")) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            counters = receiver.core.snapshot()
        stored = traces(server, "pt-operator")
    assert sorted(t["id"] for t in stored) == sorted(r["request_id"] for r in records)
    for trace in stored:
        assert trace["project_id"] == "proj_collector"
        (call,) = [e["payload"] for e in trace["events"] if e["type"] == "llm_call"]
        assert (call["input_tokens"], call["output_tokens"]) == (3, 2)
    assert counters["promptetheus_exported"] == 3 and counters["records_exported"] == 3
    assert (tmp_path / "promptetheus").is_dir() and not (tmp_path / "promptetheus" / "tenant.key").exists()
