"""Tenants: each API key is an App; every write and read is the App's own; the admin key reads all."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from tests.servers import ServerProcess

K1, K2, ADMIN = "pk-app-one", "pk-app-two", "pk-admin-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text(f"# name key\nprod {K1}\nstaging {K2}\n", encoding="utf-8")
    with ServerProcess(["serve", "--port", "0", "--db", ":memory:", "--keys-file", str(keys)],
                       env={"PROMPTWALL_LOCAL_ADMIN_KEY": ADMIN}) as running:  # fmt: skip
        yield running


def client(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10)


def requests(server: ServerProcess, key: str, **params: Any) -> List[Dict[str, Any]]:
    with client(server, key) as api:
        response = api.get("/api/console/requests", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return list(response.json()["requests"])


def test_each_app_reads_only_its_own(server: ServerProcess) -> None:
    session = "s-" + uuid.uuid4().hex[:8]
    with client(server, K1) as one:
        assert one.post("/v1/events", json={"request_id": "r-1", "session_id": session, "prompt": "secret of one",
                                            "total_tokens": 7, "model": "m1"}).status_code == 200  # fmt: skip
    assert [e["prompt"] for e in requests(server, K1, session_id=session)] == ["secret of one"]
    assert requests(server, K2, session_id=session) == []
    with client(server, K2) as two:
        assert two.get(f"/api/console/sessions/{session}").status_code == 404
        assert session not in str(two.get("/api/console/sessions").json())
        assert two.get("/api/console/billing").json()["total_tokens"] == 0
        assert "secret" not in two.get("/api/console/requests", params={"model": "m1"}).text
    with client(server, K1) as one:
        assert one.get(f"/api/console/sessions/{session}").json()["count"] == 1
        assert one.get("/api/console/billing").json()["total_tokens"] >= 7


def test_request_ids_are_unique_per_app(server: ServerProcess) -> None:
    rid = "shared-" + uuid.uuid4().hex[:8]
    with client(server, K2) as two:  # K2 claims the id first: it must not block K1
        assert two.post("/v1/events", json={"request_id": rid, "prompt": "two"}).json()["accepted"] == 1
    with client(server, K1) as one:
        assert one.post("/v1/events", json={"request_id": rid, "prompt": "one"}).json()["accepted"] == 1
        assert one.post("/v1/events", json={"request_id": rid, "prompt": "again"}).json()["skipped"] == 1
    assert [e["prompt"] for e in requests(server, K1) if e["request_id"] == rid] == ["one"]
    assert [e["prompt"] for e in requests(server, K2) if e["request_id"] == rid] == ["two"]


def test_admin_reads_every_app_and_sends_nothing(server: ServerProcess) -> None:
    rid = "adm-" + uuid.uuid4().hex[:8]
    for key in (K1, K2):
        with client(server, key) as api:
            api.post("/v1/events", json={"request_id": rid})
    assert sorted(e["app"] for e in requests(server, ADMIN) if e["request_id"] == rid) == ["prod", "staging"]
    with client(server, ADMIN) as admin:
        assert admin.post("/v1/events", json={"request_id": "x"}).status_code == 403


def test_nothing_derived_from_a_key_is_shown(server: ServerProcess) -> None:
    with client(server, K1) as one:
        one.post("/v1/events", json={"request_id": "fp-" + uuid.uuid4().hex[:8]})
    text = str(requests(server, ADMIN))
    assert "key_fingerprint" not in text and K1 not in text and K2 not in text
    assert {e["app"] for e in requests(server, K1)} == {"prod"}
    assert K1 not in server.cmdline() and K2 not in server.cmdline()
    assert all(K1 not in line and ADMIN not in line for line in server.lines)


def test_unknown_key_is_401(server: ServerProcess) -> None:
    with client(server, "pk-nobody") as stranger:
        assert stranger.get("/api/console/billing").status_code == 401
        assert stranger.post("/v1/events", json={"request_id": "x"}).status_code == 401


def test_open_mode_labels_are_salted_and_per_key(tmp_path: Path) -> None:
    """No keys configured: each key is its own App, labelled without revealing the key."""
    with ServerProcess(["serve", "--port", "0", "--db", str(tmp_path / "open.db")]) as open_server:
        for key in ("pk-x", "pk-y"):
            with client(open_server, key) as api:
                assert api.post("/v1/events", json={"request_id": "same-id"}).json()["accepted"] == 1
        x, y = requests(open_server, "pk-x"), requests(open_server, "pk-y")
        assert len(x) == len(y) == 1 and x[0]["app"] != y[0]["app"]
        label = x[0]["app"]
    import hashlib

    assert hashlib.sha256(b"pk-x").hexdigest()[:12] not in label
    with ServerProcess(["serve", "--port", "0", "--db", str(tmp_path / "open.db")]) as again:
        assert requests(again, "pk-x")[0]["app"] == label, "labels are stable across restarts"


def test_local_backend_passes_keys_by_environment() -> None:
    from promptwall_otel.backend import LocalBackend

    with LocalBackend(api_keys=["pk-env-only"]) as backend:
        assert backend._process is not None
        with open(f"/proc/{backend._process.pid}/cmdline", "rb") as handle:
            assert b"pk-env-only" not in handle.read()
        assert httpx.get(backend.url + "/api/console/billing", headers={"X-API-Key": "pk-env-only"}).status_code == 200
        assert httpx.get(backend.url + "/api/console/billing", headers={"X-API-Key": "other"}).status_code == 401
