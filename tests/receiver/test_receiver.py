"""The OTLP receiver with real exporters in front and the real backend behind.

The app sends its spans both ways at once: in-process through
PromptWallSpanProcessor to one backend, and over OTLP (HTTP protobuf, gRPC,
JSON) through the receiver to another. The two backends must hold the same
events, request_id for request_id (``mode`` says which way they came).
Baggage never leaves the process, so the app sets none here.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest

from promptwall_otel.backend import LocalBackend
from promptwall_otel.receiver.app import Receiver
from tests.conftest import API_KEY, app_env, run_app, stored_events

_VOLATILE = ("received_at", "mode")


@pytest.fixture()
def direct() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[API_KEY]) as running:
        yield running


@pytest.fixture()
def behind() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[API_KEY]) as running:
        yield running


@pytest.fixture()
def receiver(behind: LocalBackend, tmp_path: Path) -> Iterator[Receiver]:
    running = Receiver(behind.url, "127.0.0.1:0", "127.0.0.1:0", correlation_wait_s=1.0,
                       spool_root=str(tmp_path / "receiver-spool")).start()  # fmt: skip
    yield running
    running.stop()


def wait_for(url: str, count: int, timeout: float = 20, key: str = API_KEY) -> List[Dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        events = stored_events(url, key=key)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def same(a: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in a.items() if k not in _VOLATILE}


@pytest.mark.parametrize("protocol", ["http", "grpc", "json"])
def test_receiver_events_equal_in_process_events(protocol: str, direct: LocalBackend, behind: LocalBackend,
                                                 receiver: Receiver, fake_llm: str, tmp_path: Path) -> None:  # fmt: skip
    target = f"127.0.0.1:{receiver.grpc_port}" if protocol == "grpc" else receiver.http_url
    done = run_app("code", app_env(direct.url, fake_llm, str(tmp_path)), "--otlp", target, "--otlp-protocol",
                   protocol, "--otlp-logs", "--calls", "2", "--no-baggage")  # fmt: skip
    assert done.returncode == 0, done.stderr
    in_process = stored_events(direct.url)
    assert len(in_process) == 5
    through_receiver = wait_for(behind.url, 5)
    assert {e["mode"] for e in in_process} == {"sdk"} and {e["mode"] for e in through_receiver} == {"vendor"}
    by_id = {e["request_id"]: same(e) for e in through_receiver}
    assert sorted(by_id) == sorted(e["request_id"] for e in in_process)
    for event in in_process:
        assert by_id[event["request_id"]] == same(event)
    turn = next(e for e in through_receiver if e.get("session_id"))
    assert turn["prompt"] == "Hello from the e2e test" and turn["end_user_id"] == "u-e2e"


def otlp_post(url: str, body: bytes, content_type: str = "application/x-protobuf", **headers: str) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": content_type, "X-API-Key": API_KEY, **headers})


@pytest.mark.parametrize(
    "path, body, content_type, encoding, status",
    [
        ("/v1/traces", b"\x0a\xff\xff\xff", "application/x-protobuf", None, 400),  # truncated protobuf
        ("/v1/traces", b'{"resourceSpans": "x"}', "application/json", None, 400),  # wrong JSON types
        ("/v1/traces", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "application/json",
         None, 400),  # fmt: skip
        ("/v1/traces", b"{}", "text/plain", None, 415),
        ("/v1/traces", gzip.compress(b"\x00" * 80_000_000), "application/x-protobuf", "gzip", 413),  # gzip bomb
        ("/v1/metrics", b"", "application/x-protobuf", None, 404),
        ("/v1/logs", b"\x0a\x05", "application/x-protobuf", None, 400),
    ],
)
def test_bad_input_gets_its_status_and_the_receiver_keeps_serving(receiver: Receiver, path: str, body: bytes,
                                                                  content_type: str, encoding: Any, status: int) -> None:  # fmt: skip
    extra = {"Content-Encoding": encoding} if encoding else {}
    assert otlp_post(receiver.http_url + path, body, content_type, **extra).status_code == status
    healthy = otlp_post(receiver.http_url + "/v1/traces", b"")
    assert healthy.status_code == 200


def test_body_over_the_limit_is_413(behind: LocalBackend) -> None:
    with Receiver(behind.url, "127.0.0.1:0", None, max_body_bytes=1000) as small:
        assert otlp_post(small.http_url + "/v1/traces", b"\x00" * 5000).status_code == 413
        assert otlp_post(small.http_url + "/v1/traces", b"").status_code == 200


def test_json_response_in_the_request_encoding(receiver: Receiver) -> None:
    response = otlp_post(receiver.http_url + "/v1/traces", b"{}", "application/json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {}


def test_invalid_span_ids_are_a_partial_success(receiver: Receiver) -> None:
    body = (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "00000000000000000000000000000000",'
            b' "spanId": "0000000000000001", "name": "x"}]}]}]}')  # fmt: skip
    response = otlp_post(receiver.http_url + "/v1/traces", body, "application/json")
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"


def test_authentication(behind: LocalBackend) -> None:
    with Receiver(behind.url, "127.0.0.1:0", None, tokens=["t-1"]) as guarded:
        url = guarded.http_url + "/v1/traces"
        assert otlp_post(url, b"").status_code == 401
        assert otlp_post(url, b"", **{"X-Receiver-Token": "nope"}).status_code == 401
        assert otlp_post(url, b"", **{"X-Receiver-Token": "t-1"}).status_code == 200
    with Receiver(behind.url, "127.0.0.1:0", None) as keyless:
        response = httpx.post(keyless.http_url + "/v1/traces", content=b"",
                              headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
        assert response.status_code == 401 and "X-API-Key" in response.json()["error"]


def test_healthz_counts(receiver: Receiver) -> None:
    health = httpx.get(receiver.http_url + "/healthz").json()
    assert health["ok"] is True and "spans_received" in health and "records_exported" in health


def test_receive_command_runs_and_stops(behind: LocalBackend) -> None:
    process = subprocess.Popen([sys.executable, "-m", "promptwall_otel", "receive", "--http", "127.0.0.1:0",
                                "--grpc", "127.0.0.1:0", "--forward-to", behind.url], stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("promptwall-otel receiver listening on http=http://127.0.0.1:")
        url = line.split("http=", 1)[1].split()[0]
        assert httpx.get(url + "/healthz").status_code == 200
    finally:
        process.terminate()
        assert process.wait(15) == 0


def test_a_real_collector_in_the_path(direct: LocalBackend, behind: LocalBackend, receiver: Receiver,
                                      fake_llm: str, tmp_path: Path) -> None:  # fmt: skip
    """app → rotel (OTLP/HTTP in, OTLP/HTTP + gzip + X-API-Key out) → receiver → backend."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "collector"))
    from run_rotel import free_port, rotel_output, start_rotel, stop_rotel, wait_ready

    grpc_port, http_port = free_port(), free_port()
    rotel = start_rotel(grpc_port, http_port, receiver.http_url, {"X-API-Key": API_KEY})
    try:
        wait_ready(rotel, grpc_port, http_port)
        done = run_app("code", app_env(direct.url, fake_llm, str(tmp_path)), "--otlp", f"http://127.0.0.1:{http_port}", "--otlp-logs", "--no-baggage")
        assert done.returncode == 0, done.stderr
        through_collector = wait_for(behind.url, 3)
    finally:
        stop_rotel(rotel)
    assert len(through_collector) == 3, rotel_output(rotel)
    in_process = {e["request_id"]: same(e) for e in stored_events(direct.url)}
    for event in through_collector:
        assert same(event) == in_process[event["request_id"]]
    assert any(e.get("prompt") == "Hello from the e2e test" for e in through_collector), "content from log records"


def chat_request(response_id: str, with_parent: bool = False, count: int = 1, content: bool = False) -> bytes:
    """An OTLP/HTTP protobuf body of ``count`` chat spans, each its own trace, made by the SDK and the stock
    encoder; response ids ``{response_id}-{i:04d}`` when there are several. ``content``: the conversation on
    the span, so that the receiver maps it at once, as most calls are (without, it waits for content logs)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(count):
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                      "gen_ai.response.id": response_id if count == 1 else f"{response_id}-{i:04d}",
                      "gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 2}  # fmt: skip
        if content:
            question, answer = {"type": "text", "content": f"q{i}"}, {"type": "text", "content": "a"}
            attributes["gen_ai.input.messages"] = json.dumps([{"role": "user", "parts": [question]}])
            attributes["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "parts": [answer]}])
        if with_parent:
            with tracer.start_as_current_span("agent", attributes={"gen_ai.conversation.id": "never-sent"}):
                with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attributes):
                    pass
        else:
            with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attributes):
                pass
    spans = [s for s in memory.get_finished_spans() if s.name != "agent"]  # a parent never arrives
    return encode_spans(spans).SerializeToString()


def test_pass_through_keys_keep_tenants_apart(tmp_path: Path) -> None:
    with LocalBackend(api_keys=["pk-a", "pk-b"]) as shared:
        with Receiver(shared.url, "127.0.0.1:0", None, correlation_wait_s=0.2, spool_root=str(tmp_path)) as receiver:
            for key, rid in (("pk-a", "chatcmpl-tenant-a-0001"), ("pk-b", "chatcmpl-tenant-b-0001")):
                response = httpx.post(receiver.http_url + "/v1/traces", content=chat_request(rid),
                                      headers={"Content-Type": "application/x-protobuf", "X-API-Key": key})  # fmt: skip
                assert response.status_code == 200
        seen = {key: [e["metadata"]["gen_ai"]["response_id"] for e in wait_for(shared.url, 1, key=key)]
                for key in ("pk-a", "pk-b")}  # fmt: skip
    assert seen == {"pk-a": ["chatcmpl-tenant-a-0001"], "pk-b": ["chatcmpl-tenant-b-0001"]}, \
        "each tenant's events went with its own key, and each App reads only its own"


def test_correlation_wait_is_bounded(behind: LocalBackend, tmp_path: Path) -> None:
    """Neither content logs nor the parent ever arrive: the event leaves after the wait, without them."""
    with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=0.5, spool_root=str(tmp_path)) as receiver:
        started = time.monotonic()
        otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-lonely-000001", with_parent=True))
        (event,) = wait_for(behind.url, 1, timeout=10)
        assert time.monotonic() - started < 5
    assert "prompt" not in event and "session_id" not in event and event["total_tokens"] == 5


def test_replicas_share_nothing_and_store_once(behind: LocalBackend, tmp_path: Path) -> None:
    body = chat_request("chatcmpl-replicated-0001")
    with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=0.1, spool_root=str(tmp_path / "a")) as one, \
            Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=0.1, spool_root=str(tmp_path / "b")) as two:  # fmt: skip
        for replica in (one, two):  # a collector retrying on another replica
            assert otlp_post(replica.http_url + "/v1/traces", body).status_code == 200
    assert len(wait_for(behind.url, 1)) == 1


def test_overload_is_503_with_retry_after(behind: LocalBackend, tmp_path: Path) -> None:
    with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=30, max_pending_spans=1,
                  spool_root=str(tmp_path)) as receiver:  # fmt: skip
        assert otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-fills-the-buffer")).status_code == 200
        response = otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-one-too-many-0"))
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0


def test_a_request_waits_for_room_among_the_waiting_spans_before_it_is_refused(behind: LocalBackend,
                                                                              tmp_path: Path) -> None:  # fmt: skip
    """At the bound of spans waiting, a request is held until the flusher takes some (here: the first span,
    waiting for content that never comes, falls due after 0.4 s) and then accepted, not refused at once."""
    with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=0.4, max_pending_spans=1,
                  spool_root=str(tmp_path)) as receiver:  # fmt: skip
        assert otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-waits-its-time")).status_code == 200
        started = time.monotonic()
        response = otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-held-then-taken"))
        assert response.status_code == 200 and time.monotonic() - started >= 0.2
    assert len(wait_for(behind.url, 2)) == 2


def test_a_burst_past_the_spans_waiting_for_mapping_is_slowed_not_refused_and_every_span_arrives(
        behind: LocalBackend, tmp_path: Path) -> None:  # fmt: skip
    """Ten concurrent requests of 100 ready spans: more than a tenant may have waiting for the mapping step
    (400). The requests past it wait for room, none is refused, and each span is stored once."""
    bodies = [chat_request(f"chatcmpl-burst-{n:02d}", count=100, content=True) for n in range(10)]
    with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=30, spool_root=str(tmp_path)) as receiver:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(lambda body: otlp_post(receiver.http_url + "/v1/traces", body).status_code,
                                     bodies))  # fmt: skip
        assert statuses == [200] * 10
        stored = wait_for(behind.url, 1000, timeout=60)
    assert len(stored) == 1000
    assert len({event["request_id"] for event in stored}) == 1000
    assert {event["prompt"] for event in stored} == {f"q{i}" for i in range(100)}


def test_a_forwarding_backlog_over_a_second_of_sending_is_refused_and_nothing_acknowledged_is_lost(
        behind: LocalBackend, tmp_path: Path) -> None:  # fmt: skip
    """Backpressure by time: PromptWall takes each request slowly, so the tenant's buffer grows in seconds of
    sending long before it is full in bytes; the receiver refuses (503, Retry-After: 1) once the backlog is past
    a second of sending, and what it acknowledged is all stored once the backend is fast again."""
    from tests.faults.fault_server import FaultServer, slow
    from tests.faults.otlp_load import SPANS_PER_BODY, body, calls_of, template

    run = "backlog" + str(os.getpid())
    shape = template(run)
    with FaultServer(behind.url) as proxy:
        proxy.always(slow(0.4))
        with Receiver(proxy.url, "127.0.0.1:0", None, correlation_wait_s=0.05,
                      spool_root=str(tmp_path)) as receiver:  # fmt: skip
            acknowledged, refusals = 0, []
            for n in range(40):
                response = otlp_post(receiver.http_url + "/v1/traces", body(shape, n))
                if response.status_code == 200:
                    acknowledged += 1
                else:
                    assert response.status_code == 503 and response.headers["Retry-After"] == "1", response.text
                    refusals.append(response.json()["error"])
                    if len(refusals) >= 3:
                        break
                time.sleep(0.05)
            health = httpx.get(receiver.http_url + "/healthz").json()
            proxy.always(None)
            assert acknowledged >= 3 and len(refusals) == 3, (acknowledged, refusals)
            for reason in refusals:  # "forwarding is 1.4s behind": by time, not the bytes' high-water mark
                assert reason.startswith("forwarding is ") and float(reason.split()[2].rstrip("s")) > 1.0, reason
            assert health["forwarding_buffer_bytes"] < 16 * 1024 * 1024 * 3 // 4 and health["records_spooled"] == 0
            expected = (acknowledged * SPANS_PER_BODY, acknowledged * calls_of(0)[1])

            def billed() -> Tuple[int, int]:
                bill = httpx.get(behind.url + "/api/console/billing", headers={"X-API-Key": API_KEY}).json()
                return bill["events"], bill["prompt_tokens"]

            deadline = time.monotonic() + 60
            while billed() != expected and time.monotonic() < deadline:
                time.sleep(0.3)
    assert billed() == expected


def test_grpc_requires_a_key(behind: LocalBackend) -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    with Receiver(behind.url, "127.0.0.1:0", "127.0.0.1:0") as receiver:
        channel = grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}")
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.Export(trace_service_pb2.ExportTraceServiceRequest(), metadata=(("x-api-key", API_KEY),), timeout=5)
        assert reply.partial_success.rejected_spans == 0
        channel.close()


def test_dev_command_runs_backend_and_receiver(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "promptwall_otel", "dev", "--http", "127.0.0.1:0", "--grpc",
                                "off", "--backend-port", "0", "--db", ":memory:", "--correlation-wait", "0.2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={k: v for k, v in os.environ.items() if not k.startswith("PROMPTWALL_")})  # fmt: skip
    try:
        assert process.stdout is not None
        backend_url = process.stdout.readline().split()[-1]
        receiver_url = process.stdout.readline().split("http=", 1)[1].split()[0]
        for rid, headers in (("chatcmpl-dev-command-01", {"X-API-Key": "any-key"}), ("chatcmpl-dev-no-key-001", {})):
            response = httpx.post(receiver_url + "/v1/traces", content=chat_request(rid),
                                  headers={"Content-Type": "application/x-protobuf", **headers})  # fmt: skip
            assert response.status_code == 200
        events = wait_for(backend_url, 1, timeout=10, key="any-key")
        assert [e["metadata"]["gen_ai"]["response_id"] for e in events] == ["chatcmpl-dev-command-01"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a keyless app's events: App "anonymous", read without a key too
            keyless = httpx.get(backend_url + "/api/console/requests").json()["requests"]
            if keyless:
                break
            time.sleep(0.2)
        assert [(e["metadata"]["gen_ai"]["response_id"], e["app"]) for e in keyless] == \
            [("chatcmpl-dev-no-key-001", "anonymous")]
    finally:
        process.terminate()
        assert process.wait(15) == 0
    assert process.stderr is not None and "send no API key are accepted" in process.stderr.read()


def test_full_downstream_spool_is_503(tmp_path: Path) -> None:
    """PromptWall is down and the spool is at its cap: the collector is told to back off."""
    with Receiver("http://127.0.0.1:9", "127.0.0.1:0", None, correlation_wait_s=0.05,
                  spool_root=str(tmp_path)) as receiver:  # fmt: skip
        assert otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-before-full-01")).status_code == 200
        deadline = time.monotonic() + 10
        while receiver.core.stats.snapshot()["spooled"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = next(iter(receiver.core._workers.values()))
        worker.store.max_bytes = worker.store.size()  # the outage has filled it
        time.sleep(1.1)
        response = otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-after-full-002"))
        assert response.status_code == 503 and "Retry-After" in response.headers


def test_distinct_keys_are_bounded(behind: LocalBackend, tmp_path: Path) -> None:
    with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=0.05, max_tenants=2,
                  spool_root=str(tmp_path)) as receiver:  # fmt: skip
        statuses = []
        for n in range(3):
            statuses.append(otlp_post(receiver.http_url + "/v1/traces", chat_request(f"chatcmpl-tenant-cap-{n:04d}"),
                                      **{"X-API-Key": f"key-{n}"}).status_code)  # fmt: skip
            time.sleep(0.3)  # let the receiver create the tenant's sender
        assert statuses == [200, 200, 503]


def test_a_span_the_mapping_cannot_handle_costs_only_its_own_record(behind: LocalBackend, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from promptwall_otel.mapping import ledger

    real = ledger.build_event

    def fails_on_one(view: Any, *args: Any, **kwargs: Any) -> Any:
        if view.attributes.get("gen_ai.response.id") == "chatcmpl-cannot-map-0002":
            raise TypeError("a shape the mapping did not foresee")  # injected: a mapper bug on one input
        return real(view, *args, **kwargs)

    monkeypatch.setattr(ledger, "build_event", fails_on_one)
    with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=0.5, spool_root=str(tmp_path)) as receiver:
        for n in range(4):
            assert otlp_post(receiver.http_url + "/v1/traces", chat_request(f"chatcmpl-cannot-map-{n:04d}")).status_code == 200
        events = wait_for(behind.url, 3)
        assert receiver.core.stats.snapshot()["dropped"] == 1
    assert sorted(e["metadata"]["gen_ai"]["response_id"] for e in events) == [
        "chatcmpl-cannot-map-0000", "chatcmpl-cannot-map-0001", "chatcmpl-cannot-map-0003"]


def test_records_that_cannot_be_encoded_are_counted_and_the_receiver_goes_on(behind: LocalBackend, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Acknowledged spans whose records the encoder refuses (injected: an encoder bug) are counted as
    dropped and logged; the flusher keeps forwarding what comes after."""
    with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=0.2, spool_root=str(tmp_path)) as receiver:
        real = receiver.core._encoder.many

        def fails_once(records: Any) -> Any:
            if any(r["metadata"]["gen_ai"]["response_id"] == "chatcmpl-cannot-encode-0000" for r in records):
                raise ValueError("injected: an encoder bug")
            return real(records)

        monkeypatch.setattr(receiver.core._encoder, "many", fails_once)
        assert otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-cannot-encode-0000")).status_code == 200
        deadline = time.monotonic() + 10
        while receiver.core.stats.snapshot()["dropped"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.core.stats.snapshot()["dropped"] == 1
        assert otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-cannot-encode-0001")).status_code == 200
        (event,) = wait_for(behind.url, 1)
    assert event["metadata"]["gen_ai"]["response_id"] == "chatcmpl-cannot-encode-0001"


def test_forwarding_compression_is_off_only_on_this_machine() -> None:
    from promptwall_otel.transport.http import compression_for

    for endpoint in ("http://127.0.0.1:4000/v1/events", "http://[::1]:4000/v1/events", "http://localhost/v1/events",
                     "http://127.9.9.9/v1/events"):  # fmt: skip
        assert compression_for(endpoint) == "none", endpoint
    for endpoint in ("https://api.promptwall.example/v1/events", "http://10.0.0.5:4000/v1/events",
                     "http://[2001:db8::1]/v1/events", "http://localhost.example.com/v1/events"):  # fmt: skip
        assert compression_for(endpoint) == "gzip", endpoint
    assert compression_for("http://127.0.0.1/v1/events", "gzip") == "gzip"
    assert compression_for("https://api.promptwall.example/v1/events", "none") == "none"


@pytest.mark.parametrize("compression, sent_as", [("auto", "none"), ("gzip", "gzip")])
def test_events_arrive_with_and_without_gzip(behind: LocalBackend, tmp_path: Path, compression: str, sent_as: str) -> None:
    with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=0.2, spool_root=str(tmp_path),
                  compression=compression) as receiver:  # fmt: skip
        assert receiver.core.compression == sent_as
        assert otlp_post(receiver.http_url + "/v1/traces", chat_request(f"chatcmpl-sent-{compression}-01")).status_code == 200
        (event,) = wait_for(behind.url, 1)
    assert event["metadata"]["gen_ai"]["response_id"] == f"chatcmpl-sent-{compression}-01" and event["total_tokens"] == 5


def test_the_lineage_it_remembers_stays_out_of_collections(tmp_path: Path) -> None:
    """Span lineage and the ledger's calls (tens of thousands of entries at full rate) are held in maps the
    garbage collector never walks, whose entries are still found: parents, and fields inherited from them."""
    import gc

    from promptwall_otel.receiver.core import ReceiverCore
    from tests.mapping.captures import CAPTURES, load

    core = ReceiverCore("http://127.0.0.1:9/v1/events", API_KEY, spool_root=str(tmp_path), correlation_wait_s=60)
    try:
        views = [view for path in sorted(CAPTURES.glob("*.json")) for view in load(path.stem)[0]]
        core.accept_spans(views, API_KEY)
        lineage = core._lineage
        assert len(lineage) == len({(v.trace_id, v.span_id) for v in views}) >= 100
        assert not gc.is_tracked(lineage._newer) and not gc.is_tracked(lineage._older)
        children = [v for v in views if v.parent_span_id]
        assert children and all(core._inherited(API_KEY, v)[1] for v in children
                                if any(p.span_id == v.parent_span_id for p in views))  # fmt: skip
    finally:
        core.close(0.1)


@pytest.mark.parametrize("user, session", [("user-7", "conv-1"), ("odd\x1fuser", "a\x1f\x1fb"), ("", "s"), ("\x1f", "ü")])
def test_inherited_fields_come_back_from_the_lineage_whatever_they_hold(tmp_path: Path, user: str, session: str) -> None:
    """A parent's own session and user are kept in its atomic lineage entry (a join, or marshal for values
    that hold the join's separator) and reach its children unchanged; an empty value is not inherited."""
    from promptwall_otel.mapping.view import SpanView
    from promptwall_otel.receiver.core import ReceiverCore

    core = ReceiverCore("http://127.0.0.1:9/v1/events", API_KEY, spool_root=str(tmp_path), correlation_wait_s=60)
    try:
        root = SpanView("agent", 9, 1, 1, 2, {"promptwall.user_id": user, "promptwall.session_id": session})
        middle = SpanView("step", 9, 2, 1, 2, {}, parent_span_id=1)
        core.accept_spans([root, middle], API_KEY)
        inherited, complete = core._inherited(API_KEY, SpanView("chat", 9, 3, 1, 2, {}, parent_span_id=2))
        assert complete and (inherited.user_id, inherited.session_id) == (user or None, session)
    finally:
        core.close(0.1)


def test_one_tenants_lineage_is_never_anothers_even_for_crafted_ids(tmp_path: Path) -> None:
    """Parent links are keyed by tenant, trace and span in one int: ids chosen so that a careless packing
    would collide (a trace id's high bits where the tenant's number goes) still find only their own."""
    from promptwall_otel.mapping.view import SpanView
    from promptwall_otel.receiver.core import ReceiverCore

    core = ReceiverCore("http://127.0.0.1:9/v1/events", API_KEY, spool_root=str(tmp_path), correlation_wait_s=60)
    try:
        parent = SpanView("agent", (1 << 64) | 5, 77, 1, 2, {"promptwall.user_id": "user-of-tenant-a"})
        core.accept_spans([parent], "pk-tenant-a")
        core.accept_spans([SpanView("agent", 5, 77, 1, 2, {})], "pk-tenant-b")
        child = SpanView("chat", 5, 78, 1, 2, {"gen_ai.operation.name": "chat"}, parent_span_id=77)
        inherited, complete = core._inherited("pk-tenant-b", child)
        assert complete and inherited.user_id is None
        own, _ = core._inherited("pk-tenant-a", SpanView("chat", (1 << 64) | 5, 78, 1, 2, {}, parent_span_id=77))
        assert own.user_id == "user-of-tenant-a"
    finally:
        core.close(0.1)
