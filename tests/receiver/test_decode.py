"""OTLP bodies from the stock exporters decode to the same views as the SDK objects.

Every producer here is real: SDK spans and log records, the stock OTLP
protobuf encoders, the stock HTTP and gRPC exporters talking to a local
listener, and the JSON encoder the ``opentelemetry-exporter-otlp-json-http``
exporter posts (``encode_spans(spans).to_json().encode()``).
"""

from __future__ import annotations

import json
import math
import random
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from promptwall_otel.mapping.view import LogView, SpanView, from_readable_span, from_sdk_log
from promptwall_otel.receiver import (
    DecodeError,
    decode_logs_json,
    decode_logs_protobuf,
    decode_traces_json,
    decode_traces_protobuf,
    log_views,
    span_views,
)

# --- real SDK data ---------------------------------------------------------------


def _typed(value: Any) -> Any:
    """Value with its types spelled out, so True != 1 != 1.0 and tuple != list."""
    if isinstance(value, dict):
        return ("dict", sorted((k, _typed(v)) for k, v in value.items()))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, value)


def _span_fields(view: SpanView) -> Dict[str, Any]:
    fields = {slot: getattr(view, slot) for slot in SpanView.__slots__}
    fields["attributes"] = _typed(dict(view.attributes))
    fields["resource"] = _typed(dict(view.resource))
    fields["events"] = [(e.name, e.time_ns, _typed(dict(e.attributes))) for e in view.events]
    return fields


def _log_fields(view: LogView) -> Dict[str, Any]:
    fields = {slot: getattr(view, slot) for slot in LogView.__slots__}
    fields["attributes"] = _typed(dict(view.attributes))
    fields["body"] = _typed(view.body)
    return fields


@pytest.fixture(scope="module")
def sdk() -> Tuple[List[ReadableSpan], List[Any]]:
    """Spans of two providers (two resources) and the log records emitted inside them."""
    spans = InMemorySpanExporter()
    logs = InMemoryLogRecordExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "chat-api", "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    other = TracerProvider(resource=Resource.create({"service.name": "worker", "team.ids": [1, 2]}))
    other.add_span_processor(SimpleSpanProcessor(spans))
    log_provider = LoggerProvider(resource=Resource.create({"service.name": "chat-api"}))
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    logger = log_provider.get_logger("openai.v2", "2.4b0")

    tracer = provider.get_tracer("openinference.openai", "0.1.66")
    with tracer.start_as_current_span("agent run", attributes={"gen_ai.operation.name": "invoke_agent"}):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.request.temperature": 0.25,
                "gen_ai.request.stream": False,
                "gen_ai.response.finish_reasons": ["stop", "length"],
                "llm.token_counts": [1, 2, 3],
                "flags": [True, False],
                "scores": [0.5, 1.5],
                "empty.list": [],
                "empty.string": "",
                "zero": 0,
                "blob": b"\x00\xffraw",
                "nested": {"a": [1, "x"], "b": {"c": None}},
                "nothing": None,
            },
        ) as span:
            span.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "hi", "n": 1, "roles": ("user", "system")})
            span.add_event("retry")
            span.set_status(Status(StatusCode.ERROR, "rate limited"))
            logger.emit(
                event_name="gen_ai.user.message",
                body={"content": "hi", "parts": [{"type": "text"}, 3], "n": 2.5},
                attributes={"gen_ai.system": "openai", "ids": [1, 2]},
            )
            logger.emit(attributes={"event.name": "gen_ai.choice"}, body="plain text", observed_timestamp=42)
        with tracer.start_as_current_span("ok step") as step:
            step.set_status(Status(StatusCode.OK))
    logger.emit(event_name="no.span", body="dropped: no span context")
    with other.get_tracer("worker").start_as_current_span("job", kind=SpanKind.CONSUMER):
        pass
    return list(spans.get_finished_spans()), list(logs.get_finished_logs())


def _assert_spans_match(views: Sequence[SpanView], spans: Sequence[ReadableSpan]) -> None:
    by_id = {view.span_id: view for view in views}
    assert len(by_id) == len(spans) == len(views)
    for span in spans:
        assert _span_fields(by_id[span.context.span_id]) == _span_fields(from_readable_span(span))


def _assert_logs_match(views: Sequence[LogView], records: Sequence[Any]) -> None:
    expected = [view for view in map(from_sdk_log, records) if view is not None]
    assert len(expected) == 2 and len(views) == 2
    assert [_log_fields(v) for v in views] == [_log_fields(v) for v in expected]


# --- the crucial property: real producers round-trip ----------------------------


def test_protobuf_spans_equal_sdk_views(sdk: Tuple[List[ReadableSpan], List[Any]]) -> None:
    spans, _ = sdk
    request = decode_traces_protobuf(encode_spans(spans).SerializeToString())
    views, invalid = span_views(request)
    assert invalid == 0
    _assert_spans_match(views, spans)
    chat = next(v for v in views if v.name == "chat gpt-4o")
    assert (chat.kind, chat.status_code, chat.status_message) == ("CLIENT", "ERROR", "rate limited")
    assert chat.parent_span_id == next(v for v in views if v.name == "agent run").span_id
    assert chat.scope_version == "0.1.66"
    assert next(v for v in views if v.name == "agent run").parent_span_id is None
    assert next(v for v in views if v.name == "ok step").status_code == "OK"


def test_spans_of_one_resource_share_one_resource_dict(sdk: Tuple[List[ReadableSpan], List[Any]]) -> None:
    views, _ = span_views(decode_traces_protobuf(encode_spans(sdk[0]).SerializeToString()))
    chat_api = {id(v.resource) for v in views if v.resource["service.name"] == "chat-api"}
    worker = [v.resource for v in views if v.resource["service.name"] == "worker"]
    assert len(chat_api) == 1
    assert worker[0]["team.ids"] == (1, 2)


def test_protobuf_logs_equal_sdk_views(sdk: Tuple[List[ReadableSpan], List[Any]]) -> None:
    _, records = sdk
    views = log_views(decode_logs_protobuf(encode_logs(records).SerializeToString()))
    _assert_logs_match(views, records)
    assert [v.event_name for v in views] == ["gen_ai.user.message", "gen_ai.choice"]
    assert views[0].body == {"content": "hi", "parts": [{"type": "text"}, 3], "n": 2.5}


def test_json_spans_equal_sdk_views(sdk: Tuple[List[ReadableSpan], List[Any]]) -> None:
    encoder = pytest.importorskip("opentelemetry.exporter.otlp.json.common.trace_encoder")
    spans, _ = sdk
    body = encoder.encode_spans(spans).to_json().encode()  # exactly what the JSON/HTTP exporter posts
    assert json.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == format(
        spans[0].context.trace_id, "032x"
    )
    views, invalid = span_views(decode_traces_json(body))
    assert invalid == 0
    _assert_spans_match(views, spans)


def test_json_logs_equal_sdk_views(sdk: Tuple[List[ReadableSpan], List[Any]]) -> None:
    encoder = pytest.importorskip("opentelemetry.exporter.otlp.json.common._log_encoder")
    _, records = sdk
    views = log_views(decode_logs_json(encoder.encode_logs(records).to_json().encode()))
    _assert_logs_match(views, records)


def test_json_special_doubles() -> None:
    """NaN and infinities travel as the strings "NaN"/"Infinity" in OTLP/JSON."""
    attributes = [
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "inf", "value": {"doubleValue": "-Infinity"}},
    ]
    (view,), _ = span_views(decode_traces_json(json.dumps(_json_request(attributes)).encode()))
    assert math.isnan(view.attributes["nan"]) and view.attributes["inf"] == -math.inf


class _Capture(BaseHTTPRequestHandler):
    bodies: List[Tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length", 0))
        _Capture.bodies.append((self.headers.get("Content-Type", ""), self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def http_sink() -> Iterator[str]:
    _Capture.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_stock_http_protobuf_exporters(sdk: Tuple[List[ReadableSpan], List[Any]], http_sink: str) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    spans, records = sdk
    OTLPSpanExporter(endpoint=f"{http_sink}/v1/traces", compression=Compression.NoCompression).export(spans)
    OTLPLogExporter(endpoint=f"{http_sink}/v1/logs", compression=Compression.NoCompression).export(records)
    (trace_type, trace_body), (log_type, log_body) = _Capture.bodies
    assert trace_type == log_type == "application/x-protobuf"
    views, invalid = span_views(decode_traces_protobuf(trace_body))
    assert invalid == 0
    _assert_spans_match(views, spans)
    _assert_logs_match(log_views(decode_logs_protobuf(log_body)), records)


def test_stock_grpc_exporter(sdk: Tuple[List[ReadableSpan], List[Any]]) -> None:
    """gRPC hands the receiver the parsed message; span_views takes it as is."""
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: List[ExportTraceServiceRequest] = []

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC API
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
        exporter.export(sdk[0])
        exporter.shutdown()
    finally:
        server.stop(None)
    (request,) = received
    views, invalid = span_views(request)
    assert invalid == 0
    _assert_spans_match(views, sdk[0])


# --- hand-made requests and malformed input ---------------------------------------

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"


def _json_request(attributes: List[Dict[str, Any]], **span: Any) -> Dict[str, Any]:
    fields = {"traceId": TRACE, "spanId": SPAN, "name": "s", "startTimeUnixNano": "10", "attributes": attributes}
    fields.update(span)
    return {"resourceSpans": [{"scopeSpans": [{"spans": [fields]}]}]}


def test_json_accepts_proto_names_numbers_enum_names_and_unknown_fields() -> None:
    body = {
        "resource_spans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scope_spans": [
                    {
                        "scope": {"name": "lib"},
                        "spans": [
                            {
                                "trace_id": TRACE.upper(),
                                "span_id": SPAN,
                                "parent_span_id": "",
                                "name": "s",
                                "kind": "SPAN_KIND_SERVER",
                                "start_time_unix_nano": 10,
                                "status": {"code": 2},
                                "futureField": {"x": 1},
                                "links": [{"traceId": TRACE, "spanId": SPAN}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    (view,), invalid = span_views(decode_traces_json(json.dumps(body).encode()))
    assert invalid == 0
    assert (view.trace_id, view.span_id, view.parent_span_id) == (int(TRACE, 16), int(SPAN, 16), None)
    assert (view.kind, view.status_code, view.status_message, view.end_ns) == ("SERVER", "ERROR", None, 10)
    assert (view.resource, view.scope_name, view.scope_version) == ({"service.name": "svc"}, "lib", "")


def test_unspecified_and_unknown_enums() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for kind, code in ((0, 0), (42, 7)):
        spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, kind=kind).status.code = code  # type: ignore[assignment]
    views, _ = span_views(decode_traces_protobuf(request.SerializeToString()))
    assert [(v.kind, v.status_code) for v in views] == [("INTERNAL", "UNSET")] * 2


def test_invalid_ids_are_counted_not_viewed() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x00" * 8, name="ok")
    spans.add(trace_id=b"\x00" * 16, span_id=b"\x02" * 8, name="zero trace")
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x00" * 8, name="zero span")
    spans.add(trace_id=b"\x01" * 12, span_id=b"\x02" * 8, name="short trace")
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 9, name="long span")
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x03" * 4, name="short parent")
    spans.add(name="no ids")
    views, invalid = span_views(request)
    assert [v.name for v in views] == ["ok"] and views[0].parent_span_id is None
    assert invalid == 6


def test_log_views_skip_records_without_a_usable_span() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add(span_id=b"\x02" * 8, trace_id=b"\x01" * 16, event_name="kept", observed_time_unix_nano=5)
    records.add(span_id=b"\x02" * 8, event_name="kept, no trace id")
    records.add(event_name="no span")
    records.add(span_id=b"\x00" * 8, event_name="zero span")
    records.add(span_id=b"\x02" * 8, trace_id=b"\x01" * 3, event_name="bad trace id")
    views = log_views(request)
    assert [(v.event_name, v.trace_id, v.time_ns, v.body) for v in views] == [
        ("kept", int("01" * 16, 16), 5, None),
        ("kept, no trace id", 0, 0, None),
    ]


def test_empty_bodies_are_empty_requests() -> None:
    for body in (b"", b"  \n", b"{}"):
        assert span_views(decode_traces_json(body)) == ([], 0)
        assert log_views(decode_logs_json(body)) == []
    assert span_views(decode_traces_protobuf(b"")) == ([], 0)
    assert log_views(decode_logs_protobuf(b"")) == []


def test_truncated_and_random_protobuf(sdk: Tuple[List[ReadableSpan], List[Any]]) -> None:
    body = encode_spans(sdk[0]).SerializeToString()
    for cut in (1, 7, len(body) // 2):
        with pytest.raises(DecodeError):
            decode_traces_protobuf(body[:-cut])
    with pytest.raises(DecodeError):
        decode_logs_protobuf(encode_logs(sdk[1]).SerializeToString()[:-3])
    with pytest.raises(DecodeError):
        decode_traces_protobuf(b"\xff\xff\xff\xff")
    for seed in range(50):  # random bytes: DecodeError, or a request whose views are still sane
        noise = random.Random(seed).randbytes(64)
        for decode, view in ((decode_traces_protobuf, span_views), (decode_logs_protobuf, log_views)):
            try:
                view(decode(noise))  # type: ignore[operator]
            except DecodeError:
                pass


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'"resourceSpans"',
        b"null",
        json.dumps({"resourceSpans": {"scopeSpans": []}}).encode(),
        json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": "x"}]}]}).encode(),
        json.dumps(_json_request([], startTimeUnixNano={})).encode(),
        json.dumps(_json_request([], startTimeUnixNano="soon")).encode(),
        json.dumps(_json_request([], kind=[])).encode(),
        json.dumps(_json_request([{"key": "a", "value": {"intValue": 1.5}}])).encode(),
        json.dumps(_json_request([{"key": "a", "value": "plain"}])).encode(),  # json_format alone accepts this
        json.dumps(_json_request([{"key": "a", "value": {"stringValue": 5}}])).encode(),
        json.dumps(_json_request([], status="ok")).encode(),
        json.dumps(_json_request([], name=5)).encode(),
        json.dumps({"resourceSpans": [{"resource": "svc", "scopeSpans": [1]}]}).encode(),
        json.dumps(_json_request([], traceId="zz" * 16)).encode(),
        json.dumps(_json_request([], spanId="abc")).encode(),  # odd length
        json.dumps(_json_request([], spanId="ee e1 9b 7e c3 c1 b1 74")).encode(),  # fromhex would allow spaces
        json.dumps(_json_request([], traceId=12345)).encode(),
        json.dumps(_json_request([], links=[{"traceId": "nothex"}])).encode(),
        b"[" * 100_000,
    ],
)
def test_malformed_json_traces(body: bytes) -> None:
    with pytest.raises(DecodeError) as raised:
        decode_traces_json(body)
    assert len(str(raised.value)) <= 200


def test_malformed_json_logs() -> None:
    bodies: List[Dict[str, Any]] = [
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"spanId": "xyz0"}]}]}]},
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": {}}]}]}]},
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": "not an AnyValue object"}]}]}]},
        {"resourceLogs": "x"},
    ]
    for body in bodies:
        with pytest.raises(DecodeError):
            decode_logs_json(json.dumps(body).encode())


def test_canonical_proto3_json_ids_are_rejected(sdk: Tuple[List[ReadableSpan], List[Any]]) -> None:
    """protobuf's own MessageToJson writes base64 ids; OTLP/JSON wants hex, so that is not OTLP."""
    body = json_format.MessageToJson(encode_spans(sdk[0][:1])).encode()
    with pytest.raises(DecodeError, match="hex"):
        decode_traces_json(body)


def _nested(depth: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        value = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=value)]))
    return value


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_nested_kvlists() -> None:
    """Moderate nesting decodes to nested dicts; past protobuf's 100-message depth limit it is a DecodeError."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    span.attributes.add(key="deep", value=_nested(20))
    (view,), _ = span_views(decode_traces_protobuf(request.SerializeToString()))
    as_json = json_format.MessageToDict(request)
    as_json["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(traceId="01" * 16, spanId="02" * 8)
    (from_json,), _ = span_views(decode_traces_json(json.dumps(as_json).encode()))
    value = view.attributes["deep"]
    for _ in range(20):
        value = value["k"]
    assert value == "leaf" and from_json.attributes == view.attributes

    # 50 levels, encoded by hand (protobuf's Python runtime refuses to build it).
    leaf = _field(1, b"leaf")  # AnyValue.string_value
    for _ in range(50):
        leaf = _field(6, _field(1, _field(1, b"k") + _field(2, leaf)))  # AnyValue.kvlist_value.values[0]
    span_bytes = _field(1, b"\x01" * 16) + _field(2, b"\x02" * 8) + _field(9, _field(1, b"deep") + _field(2, leaf))
    with pytest.raises(DecodeError):
        decode_traces_protobuf(_field(1, _field(2, _field(2, span_bytes))))
    deep: Dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(50):
        deep = {"kvlistValue": {"values": [{"key": "k", "value": deep}]}}
    with pytest.raises(DecodeError):
        decode_traces_json(json.dumps(_json_request([{"key": "deep", "value": deep}])).encode())


def test_attribute_without_value_reads_as_none_like_the_sdk() -> None:
    attributes: List[Dict[str, Any]] = [
        {"key": "a"},
        {"key": "b", "value": {}},
        {"key": "c", "value": {"arrayValue": {}}},
        {"key": "d", "value": None},
    ]
    body = json.dumps(_json_request(attributes))
    (view,), _ = span_views(decode_traces_json(body.encode()))
    assert view.attributes == {"a": None, "b": None, "c": (), "d": None}


def test_span_kind_enum_matches_sdk_names() -> None:
    assert {PbSpan.SpanKind.Name(v)[len("SPAN_KIND_"):] for v in range(1, 6)} == {k.name for k in SpanKind}

