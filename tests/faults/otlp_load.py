"""OTLP/HTTP bodies of distinct chat spans, made fast enough to load a receiver from one Python thread.

A body holds ``SPANS_PER_BODY`` realistic chat spans (content on the span, so
the receiver forwards them without waiting for logs). It is built once with
the ``opentelemetry-proto`` classes around a marker; body ``n`` is that
template with the marker replaced by ``n`` in every response id, span id and
trace id, so each span of each body is a distinct call, and a test knows
which calls a body carried without decoding it.
"""

from __future__ import annotations

import json
from typing import Tuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

SPANS_PER_BODY = 200
_MARKER = b"QQQQQQQ"  # 7 bytes: body numbers up to 9,999,999


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def template(run: str) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(_kv("service.name", "load-app"))
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "load"
    marker = _MARKER.decode()
    for i in range(SPANS_PER_BODY):
        span = scope.spans.add()
        span.trace_id = b"\x01" + _MARKER + bytes([i]) + b"\x00" * 7
        span.span_id = _MARKER + bytes([i + 1])
        span.name = "chat gpt-4o-mini"
        span.kind = 3  # CLIENT
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + i * 1_000_000
        span.end_time_unix_nano = span.start_time_unix_nano + 800_000_000
        question = f"Where is my order {i:03d}? The tracking page shows nothing since Monday. " * 3
        span.attributes.extend([
            _kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", "openai"),
            _kv("gen_ai.request.model", "gpt-4o-mini"), _kv("gen_ai.response.id", f"chatcmpl-{run}-{marker}-{i:03d}"),
            _kv("gen_ai.usage.input_tokens", 100 + i % 7), _kv("gen_ai.usage.output_tokens", 40),
            _kv("gen_ai.input.messages", json.dumps([{"role": "user", "parts": [{"type": "text", "content": question}]}])),
            _kv("gen_ai.output.messages", json.dumps([{"role": "assistant", "finish_reason": "stop", "parts": [
                {"type": "text", "content": f"It left the warehouse yesterday, order {i:03d}."}]}])),
        ])  # fmt: skip
    return request.SerializeToString()


def body(template_bytes: bytes, n: int) -> bytes:
    return template_bytes.replace(_MARKER, f"{n:07d}".encode())


def calls_of(n: int) -> Tuple[int, int]:
    """(calls, prompt tokens) that body ``n`` carries."""
    return SPANS_PER_BODY, sum(100 + i % 7 for i in range(SPANS_PER_BODY))
