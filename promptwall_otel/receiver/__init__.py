"""OTLP receiver: decode OTLP/HTTP (protobuf, JSON) and gRPC export requests into mapping views."""

from promptwall_otel.receiver.decode import (
    DecodeError,
    decode_logs_json,
    decode_logs_protobuf,
    decode_traces_json,
    decode_traces_protobuf,
    log_views,
    span_views,
)

__all__ = [
    "DecodeError",
    "decode_traces_protobuf",
    "decode_traces_json",
    "decode_logs_protobuf",
    "decode_logs_json",
    "span_views",
    "log_views",
]
