"""The local backend's Promptetheus routes, as the seed implies them, against the real server process."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import httpx
import pytest

from promptwall_otel.backend import LocalBackend

KEY_A, KEY_B, ADMIN = "pt_app_a", "pt_app_b", "pt_admin"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[KEY_A, KEY_B], admin_key=ADMIN) as running:
        yield running


def client(server: LocalBackend, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def event(n: int, key: str, **fields: Any) -> Dict[str, Any]:
    base = {"type": "user_message", "session_id": "s1", "timestamp": f"2026-01-01T00:00:{n % 60:02d}Z", "seq": n,
            "idempotency_key": key, "payload": {"content": f"turn {n}"}}  # fmt: skip
    return {**base, **fields}


def test_create_trace_once_then_409_and_apps_apart(server: LocalBackend) -> None:
    a, b = client(server, KEY_A), client(server, KEY_B)
    made = a.post("/api/traces", json={"id": "run-1", "agent": "booker", "project_id": "p1", "user_goal": "Book Tuesday"})
    assert made.status_code == 201 and made.json()["id"] == "run-1" and made.json()["user_goal"] == "Book Tuesday"
    again = a.post("/api/traces", json={"id": "run-1", "agent": "other"})
    assert again.status_code == 409 and "already exists" in again.json()["error"]
    assert a.get("/api/traces/run-1").json()["agent"] == "booker"  # the second create changed nothing
    # The same id in another App is another trace; neither App sees the other's.
    assert b.get("/api/traces/run-1").status_code == 404
    assert b.post("/api/traces", json={"id": "run-1", "agent": "b-agent"}).status_code == 201
    assert a.get("/api/traces/run-1").json()["agent"] == "booker"
    assert [t["id"] for t in b.get("/api/traces").json()["traces"]] == ["run-1"]
    generated = a.post("/api/traces", json={"agent": "no-id"})
    assert generated.status_code == 201 and generated.json()["id"].startswith("trace_")


def test_events_in_seq_order_idempotent_and_validated(server: LocalBackend) -> None:
    a = client(server, KEY_A)
    assert a.post("/api/traces", json={"id": "run-2", "agent": "x"}).status_code == 201
    first = a.post("/api/traces/run-2/events", json={"events": [event(2, "k2"), event(0, "k0")]})
    assert first.status_code == 200 and first.json()["accepted"] == 2
    replay = a.post("/api/traces/run-2/events", json={"events": [event(0, "k0"), event(1, "k1")]})
    assert replay.json()["accepted"] == 1 and replay.json()["skipped"] == 1
    mixed = a.post("/api/traces/run-2/events", json={"events": [
        event(3, "k3"), event(4, "k4", seq=-1), event(5, "k5", timestamp="yesterday"), event(6, "", type=""),
        event(7, "k7", payload=[1]),
    ]})  # fmt: skip
    assert mixed.status_code == 207
    reasons = {item["index"]: item["error"] for item in mixed.json()["rejected"]}
    assert set(reasons) == {1, 2, 3, 4}
    assert "seq" in reasons[1] and "timestamp" in reasons[2] and "type" in reasons[3] and "payload" in reasons[4]
    stored = a.get("/api/traces/run-2").json()["events"]
    assert [e["seq"] for e in stored] == [0, 1, 2, 3]
    assert stored[0]["payload"] == {"content": "turn 0"} and stored[0]["idempotency_key"] == "k0"
    all_bad = a.post("/api/traces/run-2/events", json={"events": [event(9, "k9", seq="9")]})
    assert all_bad.status_code == 400 and all_bad.json()["accepted"] == 0


def test_refusals_name_their_reason(server: LocalBackend) -> None:
    a = client(server, KEY_A)
    a.post("/api/traces", json={"id": "run-3", "agent": "x"})
    unknown = a.post("/api/traces/never-made/events", json={"events": [event(0, "k")]})
    assert unknown.status_code == 404 and "create it first" in unknown.json()["error"]
    assert client(server, "wrong").post("/api/traces", json={"id": "z"}).status_code == 401
    assert httpx.post(server.url + "/api/traces", json={"id": "z"}).status_code == 401
    admin = client(server, ADMIN)
    assert admin.post("/api/traces", json={"id": "z"}).status_code == 403
    assert admin.get("/api/traces/run-3").status_code == 200  # the admin reads every App
    for body in (b"not json", b"[" * 100_000, b'{"id": 5}', b"[]"):
        refused = a.post("/api/traces", content=body, headers={"Content-Type": "application/json"})
        assert refused.status_code == 400 and refused.json()["error"], body[:20]
    assert a.post("/api/traces/run-3/events", json={"events": []}).status_code == 400
    assert a.post("/api/traces/run-3/events", json={"events": [event(i, f"k{i}") for i in range(501)]}).status_code == 400
    nan = a.post("/api/traces/run-3/events", content=json.dumps({"events": [event(0, "k", payload={"x": float("nan")})]}),
                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert nan.status_code == 400 and "finite" in nan.json()["rejected"][0]["error"]
    assert a.post("/api/traces/run-3/analyze").status_code == 501
    assert a.delete("/api/traces/run-3").status_code == 405


def test_artifacts_stored_and_served_as_downloads(server: LocalBackend) -> None:
    a, b = client(server, KEY_A), client(server, KEY_B)
    a.post("/api/traces", json={"id": "run-4", "agent": "x"})
    page = b"<html><script>alert(1)</script></html>"
    made = a.post("/api/traces/run-4/artifacts", content=page, headers={
        "Content-Type": "text/html", "X-Promptetheus-Filename": "page.html", "X-Promptetheus-Artifact-Type": "dom"})
    assert made.status_code == 201 and made.json()["size"] == len(page)
    listed = a.get("/api/traces/run-4").json()["artifacts"]
    assert listed[0]["filename"] == "page.html" and listed[0]["artifact_type"] == "dom" and listed[0]["size"] == len(page)
    served = a.get(f"/api/traces/run-4/artifacts/{made.json()['id']}")
    assert served.content == page and served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"] == "attachment"
    assert b.get(f"/api/traces/run-4/artifacts/{made.json()['id']}").status_code == 404
    assert a.post("/api/traces/nope/artifacts", content=b"x").status_code == 404
    too_big = a.post("/api/traces/run-4/artifacts", content=b"x" * (8 * 1024 * 1024 + 1))
    assert too_big.status_code == 413


def test_a_trace_is_read_in_bounded_pages(server: LocalBackend) -> None:
    a = client(server, KEY_A)
    a.post("/api/traces", json={"id": "run-5", "agent": "x"})
    big = "x" * (200 * 1024)
    for start in range(0, 60, 20):  # 60 events of ~200 KiB: 12 MiB in all, over one page's 8 MiB
        assert a.post("/api/traces/run-5/events", json={"events": [
            event(i, f"k{i}", payload={"blob": big}) for i in range(start, start + 20)]}).status_code == 200
    first = a.get("/api/traces/run-5").json()
    assert 0 < len(first["events"]) < 60 and "next_cursor" in first
    seen = [e["seq"] for e in first["events"]]
    cursor = first["next_cursor"]
    while cursor:
        page = a.get("/api/traces/run-5", params={"cursor": cursor, "limit": 7}).json()
        assert len(page["events"]) <= 7
        seen += [e["seq"] for e in page["events"]]
        cursor = page.get("next_cursor")
    assert seen == list(range(60)), "every event once, in order"
    assert a.get("/api/traces/run-5", params={"cursor": "not-a-cursor"}).status_code == 400
