"""OTLP request bodies to the neutral views the mapping reads.

Pure functions, no I/O: the HTTP and gRPC front ends hand over bytes (or, for
gRPC, the already parsed message) and get back :class:`SpanView` and
:class:`LogView` objects equal to what ``from_readable_span`` and
``from_sdk_log`` build from the same SDK objects in-process, so one mapping
serves both paths.

Decoding uses the opentelemetry-proto message classes; protobuf traces bodies,
the receiver's bulk, take the compiled wire decoder (``wire.pyx``) instead
where it is built: the same views, a third of the CPU. OTLP/JSON is proto3
JSON with one crucial difference: trace and span ids are hex strings, not
base64 (every other ``bytes`` field, e.g. ``bytesValue``, stays base64). Hex
happens to be valid base64 too, so parsing OTLP/JSON naively succeeds and
yields 24-byte trace ids; the ids are therefore rewritten to base64 before
``json_format`` sees them.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError as _ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from promptwall_otel.mapping.semconv import EVALUATION_EVENT
from promptwall_otel.mapping.view import EventView, LogView, SpanView

try:  # the compiled wire decoder (receiver/wire.pyx), where it was built and is current
    from promptwall_otel.receiver import wire as _wire
except ImportError:
    _wire = None  # type: ignore[assignment]

__all__ = [
    "DecodeError",
    "protobuf_span_views",
    "decode_traces_protobuf",
    "decode_traces_json",
    "decode_logs_protobuf",
    "decode_logs_json",
    "span_views",
    "log_views",
]

_M = TypeVar("_M", bound=Message)

_MESSAGE_MAX = 200

MAX_STRING_CHARS = 1024 * 1024
"""String attribute values are cut to this many characters when decoded. The mapping keeps at most
``max_content_bytes`` (32 KiB by default) of any of them, so below this cap the events equal the
in-process exporter's; the cap bounds what a span waiting for its logs and ancestors holds."""


class DecodeError(ValueError):
    """The request body is not a well-formed OTLP export request."""


# --- bodies to messages -------------------------------------------------------


def _parse_protobuf(body: bytes, message: _M, what: str) -> _M:
    try:
        message.ParseFromString(bytes(body))
    except (_ProtobufDecodeError, ValueError, TypeError, RuntimeError) as exc:
        raise DecodeError(_short(f"malformed OTLP/protobuf {what}: {exc}")) from exc
    return message


def decode_traces_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """An ``application/x-protobuf`` traces body; empty bytes are a valid empty request."""
    return _parse_protobuf(body, ExportTraceServiceRequest(), "traces")


def decode_logs_protobuf(body: bytes) -> ExportLogsServiceRequest:
    """An ``application/x-protobuf`` logs body; empty bytes are a valid empty request."""
    return _parse_protobuf(body, ExportLogsServiceRequest(), "logs")


_HEX = re.compile(r"[0-9a-fA-F]*")
# The only bytes fields OTLP/JSON writes as hex (Span, Span.Link, LogRecord); every other is base64.
_HEX_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})
_MAX_DEPTH = 100  # message nesting, as protobuf's own parsers allow


def _is_repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5.29; ``label`` is deprecated there
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _prepare(obj: Dict[str, Any], descriptor: Descriptor, depth: int = 0) -> None:
    """Check the JSON shape against the message and turn hex ids into base64, in place.

    json_format reads a string where a message belongs as an iterable of field
    names, so with ``ignore_unknown_fields`` ``"value": "text"`` would quietly
    become an empty message; objects are therefore required where messages are.
    """
    if depth > _MAX_DEPTH:
        raise DecodeError(f"message nesting deeper than {_MAX_DEPTH}")
    for key, value in obj.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        if field is None or value is None:
            continue  # unknown fields are ignored; null means unset
        if field.message_type is not None:
            items = value if _is_repeated(field) else [value]
            if not isinstance(items, list):
                raise DecodeError(f"{key} must be a JSON array")
            for item in items:
                if not isinstance(item, dict):
                    raise DecodeError(f"{key} must hold JSON objects")
                _prepare(item, field.message_type, depth + 1)
        elif field.name in _HEX_FIELDS and field.type == FieldDescriptor.TYPE_BYTES and isinstance(value, str):
            if len(value) % 2 or not _HEX.fullmatch(value):
                raise DecodeError(_short(f"{key} is not a hex string: {value!r}"))
            obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _parse_json(body: bytes, message: _M, what: str) -> _M:
    if not bytes(body).strip():
        return message  # like an empty protobuf body: a valid request with nothing in it
    try:
        root = json.loads(body)
        if not isinstance(root, dict):
            raise DecodeError(f"OTLP/JSON {what} must be a JSON object, not {type(root).__name__}")
        _prepare(root, message.DESCRIPTOR)
        json_format.ParseDict(root, message, ignore_unknown_fields=True)
    except DecodeError:
        raise
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise DecodeError(_short(f"malformed OTLP/JSON {what}: {exc}")) from exc
    return message


def decode_traces_json(body: bytes) -> ExportTraceServiceRequest:
    """An ``application/json`` (OTLP/JSON) traces body; a blank body is a valid empty request."""
    return _parse_json(body, ExportTraceServiceRequest(), "traces")


def decode_logs_json(body: bytes) -> ExportLogsServiceRequest:
    """An ``application/json`` (OTLP/JSON) logs body; a blank body is a valid empty request."""
    return _parse_json(body, ExportLogsServiceRequest(), "logs")


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MESSAGE_MAX else message[: _MESSAGE_MAX - 3] + "..."


# --- messages to views --------------------------------------------------------

_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _value(value: AnyValue, sequence: Callable[[Any], Any] = tuple) -> Any:
    """An AnyValue as the SDK holds it: sequences as ``sequence`` (tuple), maps as dicts, unset as None.

    ``string_value_strindex`` points into a profiles dictionary that traces and
    logs do not have, so it reads as None.
    """
    which = value.WhichOneof("value")
    if which == "string_value":
        text: str = value.string_value
        # Views wait in the core for up to the correlation wait: keep no giant string alive that long.
        return text if len(text) <= MAX_STRING_CHARS else text[:MAX_STRING_CHARS]
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return value.bytes_value
    if which == "array_value":
        return sequence(_value(item, sequence) for item in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values, sequence)
    return None


def _attributes(pairs: Any, sequence: Callable[[Any], Any] = tuple) -> Dict[str, Any]:
    """Key/values as a plain dict.

    A pair without a value becomes None rather than being skipped: the SDK
    keeps ``None`` attribute values and its exporters send them as an empty
    AnyValue, so this is what round-trips.
    """
    result: Dict[str, Any] = {}
    kv: KeyValue
    for kv in pairs:
        # Most values are strings and numbers: read them here, without a call per attribute (the
        # upb accessors are most of the decoding cost).
        value = kv.value
        text: str = value.string_value  # "" unless it is a string: a non-empty one needs no WhichOneof
        if text:
            result[kv.key] = text if len(text) <= MAX_STRING_CHARS else text[:MAX_STRING_CHARS]
            continue
        which = value.WhichOneof("value")
        if which == "int_value":
            result[kv.key] = value.int_value
        elif which == "double_value":
            result[kv.key] = value.double_value
        else:
            result[kv.key] = _value(value, sequence)
    return result


def _id(raw: bytes, size: int) -> Optional[int]:
    """A non-zero id of exactly ``size`` bytes as an int, else None."""
    if len(raw) != size:
        return None
    return int.from_bytes(raw, "big") or None


def _optional_id(raw: bytes, size: int) -> Optional[int]:
    """None when empty or all zero (no id), 0 when malformed, else the id."""
    if not raw.strip(b"\0"):
        return None
    return _id(raw, size) or 0


def span_views(request: ExportTraceServiceRequest) -> Tuple[List[SpanView], int]:
    """A view per span, and how many spans were dropped for invalid ids.

    Trace ids must be 16 non-zero bytes, span ids 8; a parent id must be empty,
    all zero (both mean root) or 8 bytes. Every span of a ResourceSpans shares
    one resource dict, as spans of one SDK provider do.
    """
    views: List[SpanView] = []
    invalid = 0
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name, scope_version = scope.name, scope.version
            for span in scope_spans.spans:
                trace_id = _id(span.trace_id, 16)
                span_id = _id(span.span_id, 8)
                parent_id = _optional_id(span.parent_span_id, 8)
                if trace_id is None or span_id is None or parent_id == 0:
                    invalid += 1
                    continue
                start = span.start_time_unix_nano
                status = span.status
                events = span.events
                views.append(
                    SpanView(  # positional, in SpanView's order: this runs for every span received
                        span.name,
                        trace_id,
                        span_id,
                        start,
                        span.end_time_unix_nano or start,
                        _attributes(span.attributes),
                        parent_id,
                        _KINDS.get(span.kind, "INTERNAL"),
                        _STATUS.get(status.code, "UNSET"),
                        status.message or None,
                        [EventView(event.name, event.time_unix_nano, _attributes(event.attributes)) for event in events]
                        if events else (),
                        resource,
                        scope_name,
                        scope_version,
                    )
                )
    return views, invalid


def protobuf_span_views(body: bytes) -> Tuple[List[SpanView], int]:
    """:func:`span_views` of an ``application/x-protobuf`` traces body, the same views by the fastest way built:
    the compiled wire decoder (``wire.pyx``) when present, else the protobuf runtime."""
    if _wire is None:
        return span_views(decode_traces_protobuf(body))
    try:
        return _wire.span_views(body, MAX_STRING_CHARS)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise DecodeError(_short(f"malformed OTLP/protobuf traces: {exc}")) from exc


def log_views(request: ExportLogsServiceRequest) -> List[LogView]:
    """Views of the log records that point at a span (8-byte non-zero span id), and evaluation records
    that name their call's response id instead (span id 0); the rest are skipped.

    The event name is the LogRecord ``event_name`` field (OTLP 1.5+), else the
    older ``event.name`` attribute. Bodies keep arrays as lists, as callers
    hand them to the SDK; attributes hold tuples, as the SDK does.
    """
    views: List[LogView] = []
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                span_id = _id(record.span_id, 8)
                if span_id is None:
                    # Only an evaluation naming the call by its response id is of use without a span.
                    if record.event_name != EVALUATION_EVENT:
                        continue
                    span_id = 0
                trace_id = _optional_id(record.trace_id, 16)
                if trace_id == 0:
                    continue  # a trace id of the wrong length
                attributes: Mapping[str, Any] = _attributes(record.attributes)
                if not span_id and "gen_ai.response.id" not in attributes:
                    continue
                body = _value(record.body, list) if record.HasField("body") else None
                views.append(
                    LogView(
                        trace_id=trace_id or 0,
                        span_id=span_id,
                        event_name=record.event_name or attributes.get("event.name"),
                        body=body,
                        attributes=attributes,
                        time_ns=record.time_unix_nano or record.observed_time_unix_nano or 0,
                    )
                )
    return views
