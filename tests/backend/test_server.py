"""POST /v1/events against the real backend process: every status and body of the seed."""

from __future__ import annotations

import gzip
import os
import stat
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

import httpx
import pytest

from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def stored(api: httpx.Client, **params: Any) -> List[Dict[str, Any]]:
    response = api.get("/api/console/requests", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return list(response.json()["requests"])


def test_single_event_accepted_with_seed_body(api: httpx.Client) -> None:
    rid = uid()
    response = api.post("/v1/events", json={"request_id": rid, "model": "gpt-4o-mini"})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "accepted": 1, "skipped": 0, "rejected": [], "total": 1}


def test_resubmission_is_skipped_not_doubled(api: httpx.Client) -> None:
    rid, session = uid(), uid("s")
    first = api.post("/v1/events", json={"request_id": rid, "session_id": session, "prompt_tokens": 5})
    second = api.post("/v1/events", json={"request_id": rid, "session_id": session, "prompt_tokens": 999})
    assert first.json()["accepted"] == 1
    assert second.status_code == 200
    assert second.json() == {"ok": True, "accepted": 0, "skipped": 1, "rejected": [], "total": 1}
    rows = stored(api, session_id=session)
    assert [row["prompt_tokens"] for row in rows] == [5], "first write wins, once"


def test_batch_with_mixed_outcomes_is_207(api: httpx.Client) -> None:
    dup = uid()
    api.post("/v1/events", json={"request_id": dup})
    good = [{"request_id": uid()} for _ in range(3)]
    events = [*good, {"request_id": dup}, {"request_id": ""}, {"request_id": "x" * 65}]
    response = api.post("/v1/events", json={"events": events})
    assert response.status_code == 207
    assert response.json() == {
        "ok": False,
        "accepted": 3,
        "skipped": 1,
        "rejected": [
            {"index": 4, "request_id": "", "error": "request_id required (1..64 chars)"},
            {"index": 5, "request_id": "x" * 65, "error": "request_id required (1..64 chars)"},
        ],
        "total": 6,
    }


def test_whole_batch_invalid_is_400_and_nothing_stored(api: httpx.Client) -> None:
    session = uid("s")
    events = [
        {"request_id": "", "session_id": session},
        {"request_id": uid(), "session_id": session, "mode": "bogus", "prompt_tokens": -1},
        {"request_id": uid(), "session_id": session, "risk_score": 1.5, "started_at": "yesterday"},
    ]
    response = api.post("/v1/events", json={"events": events})
    assert response.status_code == 400
    body = response.json()
    assert body["ok"] is False and body["accepted"] == 0 and body["total"] == 3
    assert [r["index"] for r in body["rejected"]] == [0, 1, 2]
    assert body["rejected"][1]["error"] == (
        "mode must be one of ingest, proxy, sdk, vendor; prompt_tokens must be a non-negative integer"
    )
    assert "risk_score must be a number in 0.0..1.0" in body["rejected"][2]["error"]
    assert "started_at must be ISO-8601 or epoch seconds" in body["rejected"][2]["error"]
    assert stored(api, session_id=session) == []


def test_duplicate_ids_inside_one_batch_store_once(api: httpx.Client) -> None:
    rid = uid()
    response = api.post("/v1/events", json={"events": [{"request_id": rid}, {"request_id": rid}]})
    assert response.status_code == 200
    assert (response.json()["accepted"], response.json()["skipped"]) == (1, 1)


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": ""}, {"Authorization": "Bearer"}, {"X-API-Key": "wrong"}, {"Authorization": "Basic abc"}],
)
def test_missing_or_invalid_key_is_401(backend: LocalBackend, headers: Dict[str, str]) -> None:
    response = httpx.post(backend.url + "/v1/events", json={"request_id": uid()}, headers=headers)
    assert response.status_code == 401
    assert response.json()["ok"] is False
    assert "wrong" not in response.text


def test_bearer_key_accepted(backend: LocalBackend) -> None:
    response = httpx.post(
        backend.url + "/v1/events", json={"request_id": uid()}, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 200


def test_documented_defaults_are_applied(api: httpx.Client) -> None:
    session = uid("s")
    api.post(
        "/v1/events",
        json={"events": [
            {"request_id": uid(), "session_id": session, "prompt_tokens": 42, "completion_tokens": 110,
             "started_at": 1777197600, "finished_at": "2026-04-26T10:00:00.820Z"},
            {"request_id": uid(), "session_id": session, "user_id": "u-1", "started_at": "2026-04-26T12:00:00+02:00",
             "unknown_field": "ignored", "model": None},
        ]},
    )  # fmt: skip
    first, second = stored(api, session_id=session)[::-1]
    assert first["mode"] == "ingest"
    assert first["started_at"] == "2026-04-26T10:00:00.000000Z"
    assert first["finished_at"] == "2026-04-26T10:00:00.820000Z"
    assert first["total_tokens"] == 152
    assert first["latency_ms"] == 820
    assert second["started_at"] == "2026-04-26T10:00:00.000000Z"
    assert second["end_user_id"] == "u-1" and second["user_id"] == "u-1"
    assert "unknown_field" not in second and "model" not in second and "cost_usd" not in second


def test_started_at_defaults_to_now(api: httpx.Client) -> None:
    rid, session = uid(), uid("s")
    api.post("/v1/events", json={"request_id": rid, "session_id": session})
    (row,) = stored(api, session_id=session)
    assert row["started_at"][:10] == row["received_at"][:10]
    assert abs(_seconds(row["started_at"]) - _seconds(row["received_at"])) < 5


def _seconds(iso: str) -> float:
    from promptwall_otel.record import parse_timestamp

    moment = parse_timestamp(iso)
    assert moment is not None
    return moment.timestamp()


def test_more_than_500_events_is_400(api: httpx.Client) -> None:
    session = uid("s")
    events = [{"request_id": uid(), "session_id": session} for _ in range(501)]
    response = api.post("/v1/events", json={"events": events})
    assert response.status_code == 400
    assert "501 > 500" in response.json()["error"]
    assert stored(api, session_id=session) == []


def test_exactly_500_events_accepted(api: httpx.Client) -> None:
    events = [{"request_id": uid()} for _ in range(500)]
    response = api.post("/v1/events", json={"events": events})
    assert response.status_code == 200 and response.json()["accepted"] == 500


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"\xff\xfe{}", b"[1, 2]", b"42", b'{"events": []}', b'{"events": {"request_id": "a"}}'],
)
def test_malformed_body_is_400(api: httpx.Client, body: bytes) -> None:
    response = api.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["ok"] is False and response.json()["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/x-protobuf"])
def test_unsupported_content_type_is_415(api: httpx.Client, content_type: str) -> None:
    response = api.post("/v1/events", content=b'{"request_id": "x"}', headers={"Content-Type": content_type})
    assert response.status_code == 415


def test_unsupported_content_encoding_is_415(api: httpx.Client) -> None:
    response = api.post(
        "/v1/events",
        content=b'{"request_id": "x"}',
        headers={"Content-Type": "application/json", "Content-Encoding": "br"},
    )
    assert response.status_code == 415


def test_gzip_body_accepted(api: httpx.Client) -> None:
    session = uid("s")
    events = [{"request_id": uid(), "session_id": session, "prompt": "p" * 1000} for _ in range(20)]
    response = api.post(
        "/v1/events",
        content=gzip.compress(json.dumps({"events": events}).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200 and response.json()["accepted"] == 20
    assert len(stored(api, session_id=session)) == 20


def test_invalid_gzip_is_400(api: httpx.Client) -> None:
    response = api.post(
        "/v1/events",
        content=b"\x1f\x8b\x08\x00not really gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 400


def test_unknown_path_is_404(api: httpx.Client) -> None:
    assert api.post("/v1/nothing", json={}).status_code == 404
    assert api.get("/api/console/nothing").status_code == 404


@pytest.fixture(scope="module")
def small_backend() -> Any:
    """A backend with tight body limits, to prove 413 without sending megabytes."""
    with LocalBackend(api_keys=[API_KEY], extra_args=["--max-body-bytes", "20000",
                                                       "--max-decompressed-bytes", "100000"]) as running:  # fmt: skip
        yield running


def test_body_over_limit_is_413_and_server_keeps_serving(small_backend: LocalBackend) -> None:
    headers = {"X-API-Key": API_KEY}
    big = {"request_id": uid(), "prompt": "x" * 30000}
    response = httpx.post(small_backend.url + "/v1/events", json=big, headers=headers)
    assert response.status_code == 413
    assert httpx.post(small_backend.url + "/v1/events", json={"request_id": uid()}, headers=headers).status_code == 200


def test_gzip_bomb_is_413(small_backend: LocalBackend) -> None:
    payload = b'{"request_id": "bomb", "prompt": "' + b"0" * 10_000_000 + b'"}'
    bomb = gzip.compress(payload, compresslevel=9)
    assert len(bomb) < 20000
    response = httpx.post(
        small_backend.url + "/v1/events",
        content=bomb,
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 413
    rows = httpx.get(small_backend.url + "/api/console/requests", headers={"X-API-Key": API_KEY}).json()
    assert all(row["request_id"] != "bomb" for row in rows["requests"])


def test_idempotent_across_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "events.db")
    rid = uid()
    with LocalBackend(db=db, api_keys=[API_KEY]) as first:
        response = httpx.post(first.url + "/v1/events", json={"request_id": rid}, headers={"X-API-Key": API_KEY})
        assert response.json()["accepted"] == 1
    with LocalBackend(db=db, api_keys=[API_KEY]) as second:
        response = httpx.post(second.url + "/v1/events", json={"request_id": rid}, headers={"X-API-Key": API_KEY})
        assert response.json() == {"ok": True, "accepted": 0, "skipped": 1, "rejected": [], "total": 1}
        rows = httpx.get(second.url + "/api/console/requests", headers={"X-API-Key": API_KEY}).json()
        assert [row["request_id"] for row in rows["requests"]] == [rid]


def test_write_survives_kill_9(tmp_path: Path) -> None:
    db = str(tmp_path / "events.db")
    rid = uid()
    backend = LocalBackend(db=db, api_keys=[API_KEY]).start()
    response = httpx.post(backend.url + "/v1/events", json={"request_id": rid}, headers={"X-API-Key": API_KEY})
    assert response.status_code == 200
    backend.kill()
    with LocalBackend(db=db, api_keys=[API_KEY]) as again:
        rows = httpx.get(again.url + "/api/console/requests", headers={"X-API-Key": API_KEY}).json()
        assert [row["request_id"] for row in rows["requests"]] == [rid]


def test_concurrent_writers_lose_and_double_nothing(tmp_path: Path) -> None:
    """8 threads post overlapping batches: every id stored once, counts add up."""
    ids = [uid() for _ in range(400)]
    batches = [[{"request_id": rid} for rid in ids[start:start + 50]] for start in range(0, 400, 25)]
    with LocalBackend(db=str(tmp_path / "c.db"), api_keys=[API_KEY]) as running:

        def post(batch: List[Dict[str, Any]]) -> Dict[str, Any]:
            with httpx.Client(base_url=running.url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
                response = client.post("/v1/events", json={"events": batch})
                assert response.status_code == 200
                return dict(response.json())

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(post, batches))
        rows = httpx.get(running.url + "/api/console/requests", params={"limit": 1000},
                         headers={"X-API-Key": API_KEY}).json()["requests"]  # fmt: skip
    assert sum(r["accepted"] for r in results) == 400
    assert sum(r["skipped"] for r in results) == sum(len(b) for b in batches) - 400
    assert sorted(row["request_id"] for row in rows) == sorted(ids)


def test_the_database_is_private_to_its_owner(tmp_path: Path) -> None:
    """Prompts and answers on disk: the file, its -wal and -shm, and the folders the backend creates, 0600/0700,
    under the usual umask 022; a database an earlier version left readable is tightened when opened again."""
    db = tmp_path / "data" / "promptwall" / "events.db"
    backend = LocalBackend(db=str(db), api_keys=[API_KEY]).start()
    try:
        with httpx.Client(base_url=backend.url, headers={"X-API-Key": API_KEY}, timeout=10) as api:
            assert api.post("/v1/events", json={"request_id": "private-1", "prompt": "a secret"}).status_code == 200
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for folder in (db.parent, db.parent.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    finally:
        backend.stop()
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if path.exists():
            os.chmod(path, 0o644)
    backend = LocalBackend(db=str(db), api_keys=[API_KEY]).start()
    try:
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert all(stat.S_IMODE(Path(f"{db}{end}").stat().st_mode) == 0o600
                   for end in ("-wal", "-shm") if Path(f"{db}{end}").exists())  # fmt: skip
    finally:
        backend.stop()


@pytest.mark.parametrize("inflating", ["isal", "zlib"])
def test_both_inflaters_read_and_refuse_bodies_alike(inflating: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies are inflated with ISA-L where installed (the server extra installs it), else zlib: the same
    bytes, the same 400 for a bad checksum, a bad block or a cut body, the same 413 past the cap."""
    import zlib

    from isal import isal_zlib

    from promptwall_otel import serving
    from promptwall_otel.serving import HttpError, decompress

    assert serving._inflating is isal_zlib  # what the servers run with here
    monkeypatch.setattr(serving, "_inflating", isal_zlib if inflating == "isal" else zlib)
    payload = json.dumps({"events": [{"request_id": uid(), "prompt": "é" * 5000}]}).encode()
    body = gzip.compress(payload)
    assert decompress(body, "gzip", 1 << 20) == payload
    assert decompress(zlib.compress(payload), "deflate", 1 << 20) == payload
    raw = zlib.compressobj(wbits=-15)
    assert decompress(raw.compress(payload) + raw.flush(), "deflate", 1 << 20) == payload
    for bad in (body[:-8] + b"\0" * 8, body[:10] + b"\xff" * 20 + body[30:], body[:-20]):
        with pytest.raises(HttpError) as refused:
            decompress(bad, "gzip", 1 << 20)
        assert refused.value.status == 400, bad[-8:]
    with pytest.raises(HttpError) as refused:
        decompress(body, "gzip", len(payload) - 1)
    assert refused.value.status == 413
