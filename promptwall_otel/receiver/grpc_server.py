"""OTLP/gRPC front end: ``TraceService/Export`` and ``LogsService/Export`` with the HTTP side's rules.

Status codes follow the OTLP specification: UNAUTHENTICATED without a key,
RESOURCE_EXHAUSTED when a message is over the size limit or more than
``max_concurrent_requests`` calls are in flight (grpcio enforces both),
UNAVAILABLE with a retry hint when the receiver cannot keep up.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, FrozenSet, Optional

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from ..serving import HttpError, api_key_from
from ..webserver import Limits
from .core import Overloaded, ReceiverCore
from .decode import log_views, span_views
from .http import TOKEN_HEADER, caller_tenant


def _tenant(core: ReceiverCore, tokens: FrozenSet[str], context: grpc.ServicerContext) -> Optional[str]:
    metadata = {key.lower(): value for key, value in context.invocation_metadata()}
    headers = {"X-API-Key": metadata.get("x-api-key", ""), "Authorization": metadata.get("authorization", "")}
    try:
        return caller_tenant(core, tokens, metadata.get(TOKEN_HEADER.lower()), api_key_from(headers))
    except HttpError as error:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, error.message)
    return None  # not reached: abort raises


def _overloaded(context: grpc.ServicerContext, exc: Overloaded) -> None:
    context.set_trailing_metadata((("retry-after", str(exc.retry_after_s)),))
    context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, core: ReceiverCore, tokens: FrozenSet[str]) -> None:
        self.core, self.tokens = core, tokens

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        tenant = _tenant(self.core, self.tokens, context) or ""
        try:
            self.core.admit(tenant)  # grpcio has decoded the body already; nothing is mapped if refused
            views, unreadable = span_views(request)
            self.core.accept_spans(views, tenant)
        except Overloaded as exc:
            _overloaded(context, exc)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if unreadable:
            self.core.counters["spans_rejected"] += unreadable
            response.partial_success.rejected_spans = unreadable
            response.partial_success.error_message = f"{unreadable} spans had invalid trace or span ids"
        return response


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, core: ReceiverCore, tokens: FrozenSet[str]) -> None:
        self.core, self.tokens = core, tokens

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        tenant = _tenant(self.core, self.tokens, context) or ""
        try:
            self.core.admit(tenant)
            self.core.accept_logs(log_views(request), tenant)
        except Overloaded as exc:
            _overloaded(context, exc)
        return logs_service_pb2.ExportLogsServiceResponse()


def start_grpc(
    address: str, core: ReceiverCore, tokens: FrozenSet[str] = frozenset(), limits: Optional[Limits] = None
) -> "tuple[grpc.Server, int]":
    """A started gRPC server and its port (``address`` may end in ``:0``)."""
    limits = limits or Limits()
    options = [
        ("grpc.max_receive_message_length", limits.max_body_bytes),
        # Idle HTTP/2 connections are closed, as on the HTTP side.
        ("grpc.max_connection_idle_ms", int(limits.idle_timeout_s * 1000)),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=limits.workers), options=options,
                         maximum_concurrent_rpcs=limits.max_concurrent_requests)  # fmt: skip
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(core, tokens), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(core, tokens), server)
    port = server.add_insecure_port(address)
    server.start()
    return server, port
