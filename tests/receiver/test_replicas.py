"""Scale-out: two receiver processes behind a client that routes by trace id give the events one receiver gives.

The client does what the Collector's ``loadbalancing`` exporter with
``routing_key: traceID`` does: it splits each export request by trace id and
sends every trace's spans to the replica its id hashes to. Spans arrive in
the order they ended (children before their parent, traces interleaved), so
the content/ancestor wait matters: a replica must see a trace's parent to
give its calls the session and user they inherit.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from promptwall_otel.backend import LocalBackend
from promptwall_otel.cli import RECEIVER_READY_PREFIX
from tests.conftest import API_KEY, stored_events
from tests.servers import ServerProcess

TRACES = 12


def conversation_spans() -> List[ReadableSpan]:
    """TRACES traces, each an agent span (session, user) over two chat calls, in the order they ended."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("replicas")
    for n in range(TRACES):
        with tracer.start_as_current_span("agent", attributes={"gen_ai.conversation.id": f"conv-{n}",
                                                               "user.id": f"user-{n % 3}"}):  # fmt: skip
            for turn in range(2):
                with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.id": f"chatcmpl-replica-{n:03d}-{turn}", "gen_ai.usage.input_tokens": 10 + n,
                    "gen_ai.usage.output_tokens": turn + 1,
                    "gen_ai.input.messages": f'[{{"role": "user", "parts": [{{"type": "text", "content": "q{n}.{turn}"}}]}}]',
                }):  # fmt: skip
                    pass
    return list(memory.get_finished_spans())


def replica_of(span: ReadableSpan, replicas: int) -> int:
    """Hash of the trace id, as the loadbalancing exporter routes (any stable hash will do)."""
    trace_id = span.context.trace_id.to_bytes(16, "big")
    return int.from_bytes(hashlib.sha256(trace_id).digest()[:4], "big") % replicas


@pytest.fixture()
def backends() -> Iterator[List[LocalBackend]]:
    with LocalBackend(api_keys=[API_KEY]) as one, LocalBackend(api_keys=[API_KEY]) as two:
        yield [one, two]


def receivers(forward_to: str, count: int, tmp_path: Path) -> List[ServerProcess]:
    return [ServerProcess(["receive", "--http", "127.0.0.1:0", "--grpc", "off", "--forward-to", forward_to,
                           "--correlation-wait", "1", "--spool-dir", str(tmp_path / f"spool-{forward_to[-5:]}-{n}")],
                          ready_prefix=RECEIVER_READY_PREFIX) for n in range(count)]  # fmt: skip


def send(url: str, spans: List[ReadableSpan]) -> None:
    # A few spans per request, as a batching collector sends them: parents come after their children.
    for start in range(0, len(spans), 5):
        response = httpx.post(url + "/v1/traces", content=encode_spans(spans[start:start + 5]).SerializeToString(),
                              headers={"Content-Type": "application/x-protobuf", "X-API-Key": API_KEY})  # fmt: skip
        assert response.status_code == 200, response.text


def events(url: str, count: int) -> Dict[str, Dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        stored = stored_events(url)
        if len(stored) >= count or time.monotonic() > deadline:
            return {e["request_id"]: {k: v for k, v in e.items() if k != "received_at"} for e in stored}
        time.sleep(0.2)


def test_two_replicas_routed_by_trace_id_equal_one_receiver(backends: List[LocalBackend], tmp_path: Path) -> None:
    spans = conversation_spans()
    single, pair = backends
    (alone,) = receivers(single.url, 1, tmp_path)
    with alone:
        send(alone.url, spans)
        expected = events(single.url, 2 * TRACES)
    first, second = receivers(pair.url, 2, tmp_path)
    with first, second:
        routed: List[List[ReadableSpan]] = [[], []]
        for span in spans:
            routed[replica_of(span, 2)].append(span)
        assert routed[0] and routed[1], "both replicas get traces"
        for replica, share in zip((first, second), routed):
            send(replica.url, share)
        got = events(pair.url, 2 * TRACES)
    assert len(expected) == 2 * TRACES
    assert all(e.get("session_id", "").startswith("conv-") and e.get("end_user_id") for e in expected.values())
    assert got == expected
