"""Fuzz: random and mutated requests to the backend and the receiver (HTTP and gRPC); every one is answered.

"Answered" means a status line (HTTP) or a status (gRPC) comes back, never a
closed connection or a hang, and never a 500 / UNKNOWN: those are our faults,
and each one found here was a bug. Seeds are fixed, so a failure reproduces.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from typing import Any, Iterator, List, Tuple

import grpc
import httpx
import pytest
import zstandard

from promptwall_otel.backend.server import BackendConfig, BackendServer
from promptwall_otel.receiver.app import Receiver
from tests.receiver.test_receiver import chat_request

KEY = "pk-fuzz"
ROUNDS = 1000


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendServer]:
    with BackendServer(BackendConfig(port=0, api_keys={KEY: "fuzz"})) as running:
        yield running


@pytest.fixture(scope="module")
def receiver(backend: BackendServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    with Receiver(backend.url, "127.0.0.1:0", "127.0.0.1:0", correlation_wait_s=0.1,
                  spool_root=str(tmp_path_factory.mktemp("spool"))) as running:  # fmt: skip
        yield running


_ODD_VALUES: List[Any] = [
    2**63, -(2**63) - 1, 2**53 + 1, 10**30, 1e308, -0.0, True, None, "", "\x00", "\ud800", "x" * 70_000,
    [], {}, [[[[[]]]]], {"a": {"b": {"c": [1, {"d": None}]}}}, "2026-13-45T99:99:99Z", -1, 1.5,
]  # fmt: skip


def _odd(rng: random.Random) -> Any:
    return rng.choice(_ODD_VALUES)


def event_seed(rng: random.Random) -> Any:
    event = {"request_id": f"f-{rng.getrandbits(40):x}", "model": "m", "prompt_tokens": 3, "completion_tokens": 4,
             "metadata": {"k": "v", "n": 1}, "session_id": "s", "started_at": "2026-04-26T10:00:00Z",
             "spans": [{"stage_name": "x", "prompt_tokens": 1}], "policy_hits": ["p"]}  # fmt: skip
    for _ in range(rng.randrange(3)):
        event[rng.choice(list(event) + ["extra", "cost_usd", "latency_ms", "risk_score"])] = _odd(rng)
    if rng.random() < 0.2:
        event["metadata"] = {rng.choice(["k", "\ud83d", "a.b", "\x00"]): _odd(rng)}
    return {"events": [event, _odd(rng) if rng.random() < 0.2 else {"request_id": f"g-{rng.getrandbits(40):x}"}]}


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        choice = rng.randrange(6)
        position = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(position, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[position:position] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 9)))
        elif choice == 2:
            del data[position:position + rng.randrange(1, 16)]
        elif choice == 3:
            data = data[:position]
        elif choice == 4:
            data[position:position] = rng.choice([b"[" * 5000, b"NaN", b"\\ud800", b"99999999999999999999999",
                                                  b"\xff\xfe", b'"', b"{", b"\x00"])  # fmt: skip
        else:
            data = bytearray(rng.getrandbits(8) for _ in range(rng.randrange(64)))
    return bytes(data)


def encode(rng: random.Random, body: bytes) -> Tuple[bytes, dict]:
    encoding = rng.choice(["identity", "gzip", "deflate", "zstd", "br", "gzip-lie"])
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    elif encoding == "zstd":
        body = zstandard.ZstdCompressor().compress(body)
    if rng.random() < 0.1:
        body = mutate(rng, body)  # corrupt after compression too
    return body, ({} if encoding == "identity" else {"Content-Encoding": encoding.replace("-lie", "")})


def send(client: httpx.Client, rng: random.Random, url: str, body: bytes, headers: dict) -> httpx.Response:
    if rng.random() < 0.3:
        pieces = [body[i:i + 97] for i in range(0, len(body), 97)]
        return client.post(url, content=iter(pieces), headers=headers)  # chunked
    return client.post(url, content=body, headers=headers)


def check(response: httpx.Response, allowed: set) -> None:
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert body["ok"] is False and (body.get("error") or body.get("rejected"))


@pytest.mark.parametrize("seed", range(2))
def test_backend_answers_every_fuzzed_request(backend: BackendServer, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=backend.url, timeout=10) as client:
        for _ in range(ROUNDS):
            raw = dumps(event_seed(rng))
            if rng.random() < 0.5:
                raw = mutate(rng, raw)
            body, headers = encode(rng, raw)
            headers["Content-Type"] = rng.choice(["application/json"] * 8 + ["text/plain", "", "application/json; x"])
            if rng.random() < 0.9:
                headers["X-API-Key"] = KEY
            response = send(client, rng, "/v1/events", body, headers)
            check(response, {200, 207, 400, 401, 413, 415})
            path = rng.choice(["/api/console/requests", "/api/console/sessions", "/api/console/billing",
                               "/api/console/sessions/s", "/api/console/nope"])  # fmt: skip
            query = rng.choice(["limit", "cursor", "metadata.k", "metadata.%00", "metadata.%ED%A0%80", "session_id",
                                "metadata.%22"]) + "=" + rng.choice(["1", "0", "x", "%00", "%ED%A0%80", "%FF", "v",
                                                                    "eyJ4Ijox", "WyJ4IiwxXQ"])  # fmt: skip
            check(client.get(f"{path}?{query}", headers={"X-API-Key": KEY}), {200, 400, 404})
    bill = httpx.get(backend.url + "/api/console/billing", headers={"X-API-Key": KEY})
    assert bill.status_code == 200 and json.loads(bill.content)  # reads stay valid JSON after it all


@pytest.mark.parametrize("seed", range(2))
def test_receiver_http_answers_every_fuzzed_request(receiver: Receiver, seed: int) -> None:
    rng = random.Random(100 + seed)
    seeds = [chat_request(f"chatcmpl-fuzz-seed-{n}") for n in range(3)]
    with httpx.Client(base_url=receiver.http_url, timeout=10) as client:
        for _ in range(ROUNDS):
            content_type = rng.choice(["application/x-protobuf"] * 4 + ["application/json"] * 3 + ["text/plain"])
            raw = rng.choice(seeds)
            if content_type == "application/json":
                raw = rng.choice([b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": '
                                  b'"5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "x",'
                                  b' "attributes": [{"key": "gen_ai.system", "value": {"stringValue": "openai"}}]}]}]}]}',
                                  b"{}", b'{"resourceLogs": []}'])  # fmt: skip
            if rng.random() < 0.7:
                raw = mutate(rng, raw)
            body, headers = encode(rng, raw)
            headers.update({"Content-Type": content_type, "X-API-Key": f"pk-fuzz-{rng.randrange(3)}"})
            path = rng.choice(["/v1/traces", "/v1/traces", "/v1/logs", "/v1/metrics"])
            check(send(client, rng, path, body, headers), {200, 400, 404, 413, 415, 503})


def test_receiver_grpc_answers_every_fuzzed_message(receiver: Receiver) -> None:
    rng = random.Random(7)
    seeds = [chat_request(f"chatcmpl-grpc-fuzz-{n}") for n in range(3)]
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        calls = [channel.unary_unary(f"/opentelemetry.proto.collector.{kind}/Export")
                 for kind in ("trace.v1.TraceService", "logs.v1.LogsService")]  # fmt: skip
        statuses = set()
        for _ in range(ROUNDS):
            body = mutate(rng, rng.choice(seeds)) if rng.random() < 0.8 else rng.choice(seeds)
            metadata = (("x-api-key", KEY),) if rng.random() < 0.9 else ()
            try:
                rng.choice(calls)(body, metadata=metadata, timeout=10)
                statuses.add(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                statuses.add(error.code())
                # Malformed messages are the client's fault (INVALID_ARGUMENT), never an INTERNAL error of ours.
                assert error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.INVALID_ARGUMENT), \
                    (error.code(), error.details())  # fmt: skip
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    assert "retry" in error.details() or "full" in error.details() or "waiting" in error.details()
        assert {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT} <= statuses
