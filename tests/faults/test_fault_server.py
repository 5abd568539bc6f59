"""The fault proxy itself, against a real backend: every fault does what exporter tests rely on."""

from __future__ import annotations

import email.utils
import gzip
import json
import threading
import time
import uuid
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from promptwall_otel.backend import LocalBackend
from tests.faults.fault_server import (
    FaultServer,
    forward,
    partial_reject,
    reset,
    reset_before_read,
    slow,
    status,
)

KEY = "k"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[KEY]) as running:
        yield running


@pytest.fixture()
def proxy(backend: LocalBackend) -> Iterator[FaultServer]:
    with FaultServer(backend.url) as running:
        yield running


@pytest.fixture()
def client(proxy: FaultServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, headers=HEADERS, timeout=5, trust_env=False) as running:
        yield running


@pytest.fixture()
def session() -> str:
    """A session id of its own, so each test reads back only its events from the shared backend."""
    return f"s-{uuid.uuid4().hex[:12]}"


def batch(session: str, n: int) -> Dict[str, Any]:
    return {"events": [{"request_id": f"{session}-{i}", "session_id": session, "model": "m",
                        "total_tokens": 10} for i in range(n)]}  # fmt: skip


def stored(backend: LocalBackend, session: str) -> List[str]:
    """The request_ids the backend holds for ``session``, asked directly (not through the proxy)."""
    response = httpx.get(f"{backend.url}/api/console/requests", params={"session_id": session},
                         headers=HEADERS, trust_env=False)  # fmt: skip
    assert response.status_code == 200, response.text
    return sorted(row["request_id"] for row in response.json()["requests"])


# --- forwarding ---------------------------------------------------------------


def test_forward_stores_and_relays(backend: LocalBackend, proxy: FaultServer, client: httpx.Client,
                                   session: str) -> None:  # fmt: skip
    response = client.post("/v1/events", json=batch(session, 3))
    assert response.status_code == 200
    assert response.json() == {"ok": True, "accepted": 3, "skipped": 0, "rejected": [], "total": 3}
    assert response.headers["content-type"] == "application/json"
    assert stored(backend, session) == [f"{session}-{i}" for i in range(3)]
    (record,) = proxy.requests
    assert (record.fault, record.events, record.outcome) == ("forward", 3, 200)


def test_forward_keeps_auth_and_content_headers(proxy: FaultServer, session: str) -> None:
    body = json.dumps(batch(session, 1)).encode()
    with httpx.Client(base_url=proxy.url, trust_env=False) as bare:
        bearer = bare.post("/v1/events", content=body, headers={"Authorization": f"Bearer {KEY}",
                                                                "Content-Type": "application/json"})  # fmt: skip
        assert bearer.status_code == 200 and bearer.json()["skipped"] == 0
        assert bare.post("/v1/events", content=body, headers={"X-API-Key": "wrong",
                                                              "Content-Type": "application/json"}).status_code == 401
        assert bare.post("/v1/events", content=body, headers={"X-API-Key": KEY,
                                                              "Content-Type": "text/plain"}).status_code == 415
    assert [r.outcome for r in proxy.requests] == [200, 401, 415]


def test_gzip_body_is_forwarded_intact(backend: LocalBackend, proxy: FaultServer, client: httpx.Client,
                                       session: str) -> None:  # fmt: skip
    body = gzip.compress(json.dumps(batch(session, 2)).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["accepted"] == 2
    assert stored(backend, session) == [f"{session}-0", f"{session}-1"]
    assert proxy.requests[0].events == 2


def test_other_paths_pass_through_unlogged(client: httpx.Client, proxy: FaultServer, session: str) -> None:
    proxy.always(status(503))  # faults are for POST /v1/events only
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/api/console/requests", params={"session_id": session}).json() == {"requests": [],
                                                                                          "count": 0}
    assert client.get("/api/console/requests", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/other", json={}).status_code == 404
    assert proxy.requests == []


# --- injected statuses --------------------------------------------------------

HTTP_DATE = email.utils.formatdate(time.time() + 1, usegmt=True)


@pytest.mark.parametrize(
    "code, retry_after",
    [(500, None), (502, None), (503, None), (504, None), (429, "1"), (429, HTTP_DATE), (503, "2"),
     (400, None), (401, None), (403, None), (404, None), (413, None)],
)  # fmt: skip
def test_status_answers_without_forwarding(backend: LocalBackend, proxy: FaultServer, client: httpx.Client,
                                           session: str, code: int, retry_after: Any) -> None:  # fmt: skip
    proxy.script(status(code, retry_after=retry_after))
    response = client.post("/v1/events", json=batch(session, 2))
    assert response.status_code == code
    assert response.json() == {"ok": False, "error": f"injected {code}"}
    assert response.headers.get("retry-after") == retry_after
    assert stored(backend, session) == []
    # The body was read, so the kept-alive connection serves the next request normally.
    assert client.post("/v1/events", json=batch(session, 2)).status_code == 200
    assert [(r.fault, r.events, r.outcome) for r in proxy.requests] == [("status", 2, code), ("forward", 2, 200)]


def test_status_with_custom_body(client: httpx.Client, proxy: FaultServer, session: str) -> None:
    proxy.script(status(400, body={"ok": False, "error": "nope"}))
    response = client.post("/v1/events", json=batch(session, 1))
    assert (response.status_code, response.json()) == (400, {"ok": False, "error": "nope"})


# --- slow, reset ------------------------------------------------------------


def test_slow_answers_late(client: httpx.Client, proxy: FaultServer, session: str) -> None:
    proxy.script(slow(0.3))
    started = time.monotonic()
    assert client.post("/v1/events", json=batch(session, 1)).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert proxy.requests[0][1:] == ("slow", 1, 200)


def test_slow_past_the_client_timeout_still_stores(backend: LocalBackend, proxy: FaultServer,
                                                   session: str) -> None:  # fmt: skip
    proxy.script(slow(0.4))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{proxy.url}/v1/events", json=batch(session, 2), headers=HEADERS, timeout=0.15,
                   trust_env=False)  # fmt: skip
    assert stored(backend, session) == [f"{session}-0", f"{session}-1"]  # committed before the timeout
    assert proxy.wait_for_requests(1, timeout=2)
    assert proxy.requests[0][1:] == ("slow", 2, 200)


def test_slow_without_forward_drops_unanswered(backend: LocalBackend, proxy: FaultServer, client: httpx.Client,
                                               session: str) -> None:  # fmt: skip
    proxy.script(slow(0.2, then_forward=False))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/v1/events", json=batch(session, 1))
    assert stored(backend, session) == []
    assert proxy.requests[0][1:] == ("slow", 1, "timeout")


def test_reset_after_reading(backend: LocalBackend, proxy: FaultServer, client: httpx.Client,
                             session: str) -> None:  # fmt: skip
    proxy.script(reset())
    with pytest.raises(httpx.ReadError, match="reset"):
        client.post("/v1/events", json=batch(session, 3))
    assert stored(backend, session) == []
    assert proxy.requests[0][1:] == ("reset", 3, "reset")
    assert client.post("/v1/events", json=batch(session, 3)).status_code == 200  # a new connection


def test_reset_before_read(backend: LocalBackend, proxy: FaultServer, client: httpx.Client,
                           session: str) -> None:  # fmt: skip
    proxy.script(reset_before_read())
    # The RST can overtake the body: the client then fails writing, or (the error consumed by the
    # write) reads an EOF. Every outcome is a transport error with no answer.
    with pytest.raises((httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        client.post("/v1/events", json=batch(session, 3))
    assert stored(backend, session) == []
    assert proxy.requests[0][1:] == ("reset_before_read", None, "reset")


# --- partial reject -----------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
def test_partial_reject_relays_the_real_207(backend: LocalBackend, proxy: FaultServer, client: httpx.Client,
                                            session: str, gzipped: bool) -> None:  # fmt: skip
    proxy.script(partial_reject([1, 3]))
    body = json.dumps(batch(session, 4)).encode()
    headers = {"Content-Type": "application/json"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 207
    result = response.json()
    assert [r["index"] for r in result["rejected"]] == [1, 3]
    assert (result["accepted"], result["total"]) == (2, 4)
    assert proxy.corrupted_ids == [f"{session}-1", f"{session}-3"]
    assert stored(backend, session) == [f"{session}-0", f"{session}-2"]
    assert proxy.requests[0][1:] == ("partial_reject", 4, 207)


def test_partial_reject_of_everything_is_400(proxy: FaultServer, client: httpx.Client, session: str) -> None:
    proxy.script(partial_reject([0]))
    response = client.post("/v1/events", json=batch(session, 1)["events"][0])  # a lone event
    assert response.status_code == 400 and response.json()["rejected"][0]["index"] == 0
    assert proxy.corrupted_ids == [f"{session}-0"]


# --- script, always, log --------------------------------------------------------


def test_script_is_consumed_in_order(proxy: FaultServer, client: httpx.Client, session: str) -> None:
    proxy.script(status(503), status(429, retry_after="1"), forward(), status(500))
    codes = [client.post("/v1/events", json=batch(session, 1)).status_code for _ in range(5)]
    assert codes == [503, 429, 200, 500, 200]
    assert [r.fault for r in proxy.requests] == ["status", "status", "forward", "status", "forward"]
    assert [r.outcome for r in proxy.requests] == codes


def test_always_overrides_the_script_until_cleared(proxy: FaultServer, client: httpx.Client,
                                                   session: str) -> None:  # fmt: skip
    proxy.script(status(429))
    proxy.always(status(503))
    assert [client.post("/v1/events", json=batch(session, 1)).status_code for _ in range(3)] == [503] * 3
    proxy.always(None)
    assert [client.post("/v1/events", json=batch(session, 1)).status_code for _ in range(2)] == [429, 200]


def test_request_log_times_and_waiting(proxy: FaultServer, client: httpx.Client, session: str) -> None:
    before = time.monotonic()
    for n in (1, 2, 3):
        client.post("/v1/events", json=batch(session, n))
    assert proxy.wait_for_requests(3, timeout=1)
    times = [r.at for r in proxy.requests]
    assert before <= times[0] <= times[1] <= times[2] <= time.monotonic()
    assert [r.events for r in proxy.requests] == [1, 2, 3]
    started = time.monotonic()
    assert not proxy.wait_for_requests(4, timeout=0.1)
    assert time.monotonic() - started < 1


def test_log_keeps_arrival_order_when_answers_finish_out_of_order(proxy: FaultServer, session: str) -> None:
    proxy.script(slow(0.3))
    slow_one = threading.Thread(target=httpx.post, args=(f"{proxy.url}/v1/events",),
                                kwargs={"json": batch(session, 1), "headers": HEADERS, "trust_env": False})
    slow_one.start()
    time.sleep(0.1)
    assert httpx.post(f"{proxy.url}/v1/events", json=batch(session, 2), headers=HEADERS,
                      trust_env=False).status_code == 200  # fmt: skip
    slow_one.join()
    assert [(r.fault, r.events) for r in proxy.requests] == [("slow", 1), ("forward", 2)]


# --- shutdown -----------------------------------------------------------------


def test_stop_is_prompt_with_a_slow_answer_and_idle_connections(backend: LocalBackend, session: str) -> None:
    proxy = FaultServer(backend.url).start()
    idle = httpx.Client(base_url=proxy.url, headers=HEADERS, trust_env=False)
    assert idle.get("/healthz").status_code == 200  # leaves a kept-alive connection open
    proxy.script(slow(30))
    errors: List[BaseException] = []

    def post() -> None:
        try:
            httpx.post(f"{proxy.url}/v1/events", json=batch(session, 1), headers=HEADERS, timeout=10,
                       trust_env=False)  # fmt: skip
        except httpx.HTTPError as exc:
            errors.append(exc)

    poster = threading.Thread(target=post)
    poster.start()
    deadline = time.monotonic() + 2
    while not stored(backend, session) and time.monotonic() < deadline:  # slow forwards first
        time.sleep(0.02)
    ours = f"fault-server:{proxy.url.rsplit(':', 1)[1]}"
    assert len([t for t in threading.enumerate() if t.name == ours]) == 3  # serving, idle, slow
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 2
    poster.join(2)
    assert not poster.is_alive() and isinstance(errors[0], httpx.RemoteProtocolError)
    assert proxy.requests[0][1:] == ("slow", 1, "timeout")
    assert not [t for t in threading.enumerate() if t.name == ours]
    idle.close()
    proxy.stop()  # idempotent
