"""The receiver under the attacks of issue 10, as a real process: any OTLP client, bounded memory, answers."""

from __future__ import annotations

import gzip
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List

import httpx
import pytest
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from promptwall_otel.backend import LocalBackend
from promptwall_otel.cli import RECEIVER_READY_PREFIX
from tests.backend.test_attacks import SERVED_PROMPTLY_S
from tests.conftest import API_KEY
from tests.receiver.test_receiver import chat_request, wait_for
from tests.servers import ServerProcess, chunked, raw_exchange, read_response


@pytest.fixture(scope="module")
def behind() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[API_KEY]) as running:
        yield running


@pytest.fixture(scope="module")
def receiver(behind: LocalBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    spool = tmp_path_factory.mktemp("spool")
    with ServerProcess(["receive", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--forward-to", behind.url,
                        "--correlation-wait", "0.2", "--spool-dir", str(spool), "--header-timeout", "1",
                        "--body-timeout", "1"], ready_prefix=RECEIVER_READY_PREFIX) as running:  # fmt: skip
        yield running


def post(url: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(url + "/v1/traces", content=body, timeout=30,
                      headers={"Content-Type": "application/x-protobuf", "X-API-Key": API_KEY, **headers})  # fmt: skip


def test_chunked_body_like_the_nodejs_sdk(receiver: ServerProcess, behind: LocalBackend) -> None:
    body = chat_request("chatcmpl-chunked-body-01")
    status, headers, reply = raw_exchange(receiver.url, chunked("/v1/traces", [body[:10], body[10:]], [
        "Content-Type: application/x-protobuf", f"X-API-Key: {API_KEY}"]))  # fmt: skip
    assert status == 200 and headers["content-type"] == "application/x-protobuf"
    events = wait_for(behind.url, 1)
    assert "chatcmpl-chunked-body-01" in [e["metadata"]["gen_ai"]["response_id"] for e in events]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
def test_every_collector_encoding(receiver: ServerProcess, encoding: str) -> None:
    raw = chat_request(f"chatcmpl-encoding-{encoding}")
    body = {"gzip": gzip.compress, "deflate": zlib.compress, "zstd": zstandard.ZstdCompressor().compress}[encoding](raw)
    assert post(receiver.url, body, **{"Content-Encoding": encoding}).status_code == 200
    bomb = {"gzip": gzip.compress, "deflate": zlib.compress,
            "zstd": zstandard.ZstdCompressor().compress}[encoding](b"\0" * (40 * 1024 * 1024))  # fmt: skip
    response = post(receiver.url, bomb, **{"Content-Encoding": encoding})
    assert response.status_code == 413 and "decompressed" in response.json()["error"]


def test_unknown_encoding_is_415_naming_the_supported(receiver: ServerProcess) -> None:
    response = post(receiver.url, b"", **{"Content-Encoding": "br"})
    assert response.status_code == 415 and "gzip, deflate, zstd" in response.json()["error"]


def test_slow_body_is_408_and_others_are_served(receiver: ServerProcess) -> None:
    import socket

    host, port = receiver.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"X-API-Key: k\r\nContent-Length: 500\r\n\r\n\x0a")  # fmt: skip
        started = time.monotonic()
        assert post(receiver.url, b"").status_code == 200
        assert time.monotonic() - started < SERVED_PROMPTLY_S
        assert read_response(sock)[0] == 408


def big_span_request(size: int, n: int) -> bytes:
    request = ExportTraceServiceRequest.FromString(chat_request(f"chatcmpl-big-{n:04d}-000000"))
    span = request.resource_spans[0].scope_spans[0].spans[0]
    attribute = span.attributes.add()
    attribute.key = "gen_ai.prompt.0.content"
    attribute.value.string_value = "p" * size
    return gzip.compress(request.SerializeToString())


def test_memory_is_bounded_under_concurrent_gzip_expansion(receiver: ServerProcess) -> None:
    """16 concurrent 30 MiB-expanding requests: RSS stays under its documented bound; a normal client is served."""
    bodies = [big_span_request(30 * 1024 * 1024, n) for n in range(16)]
    assert all(len(body) < 100_000 for body in bodies)
    before = receiver.rss_mib()
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(post, receiver.url, body, **{"Content-Encoding": "gzip"}) for body in bodies]
        time.sleep(0.2)
        started = time.monotonic()
        normal = post(receiver.url, chat_request("chatcmpl-normal-under-load"))
        served_in = time.monotonic() - started
        statuses: List[int] = [future.result().status_code for future in futures]
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    assert normal.status_code == 200 and served_in < SERVED_PROMPTLY_S
    peak = receiver.rss_mib(peak=True)
    print(f"receiver RSS before {before:.0f} MiB, peak {peak:.0f} MiB, statuses {sorted(statuses)}")
    assert peak < 600
