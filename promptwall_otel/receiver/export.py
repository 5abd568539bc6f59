"""The one Export step both front ends call: an OTLP body in, the OTLP Export response out.

As in the Collector's OTLP receiver, the HTTP and gRPC front ends only
authenticate, admit and frame; what a body means (decoding, handing spans and
logs to the :class:`ReceiverCore`, the ``partial_success`` reply) is decided
here, once. gRPC hands over the raw message bytes too, so both transports take
the same decoder (the compiled wire decoder for protobuf traces, where built).

Raises :class:`DecodeError` for a malformed body (HTTP 400, gRPC
INVALID_ARGUMENT) and :class:`Overloaded` when the core cannot take more
(503, UNAVAILABLE).
"""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .core import ReceiverCore
from .decode import decode_logs_json, decode_logs_protobuf, decode_traces_json, log_views, protobuf_span_views, \
    span_views

__all__ = ["PROTOBUF", "JSON", "export_traces", "export_logs"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def export_traces(core: ReceiverCore, body: bytes, media_type: str, tenant: str) -> ExportTraceServiceResponse:
    """Spans of an export request to the core; spans with invalid ids are rejected in ``partial_success``."""
    if media_type == JSON:
        views, unreadable = span_views(decode_traces_json(body))
    else:
        views, unreadable = protobuf_span_views(body)
    core.accept_spans(views, tenant)
    response = ExportTraceServiceResponse()
    if unreadable:
        core.counters["spans_rejected"] += unreadable
        response.partial_success.rejected_spans = unreadable
        response.partial_success.error_message = f"{unreadable} spans had invalid trace or span ids"
    return response


def export_logs(core: ReceiverCore, body: bytes, media_type: str, tenant: str) -> ExportLogsServiceResponse:
    """Log records of an export request to the core (those of no use to a span are skipped, not rejected)."""
    request = decode_logs_json(body) if media_type == JSON else decode_logs_protobuf(body)
    core.accept_logs(log_views(request), tenant)
    return ExportLogsServiceResponse()
