"""OTLP/gRPC front end: ``TraceService/Export`` and ``LogsService/Export`` with the HTTP side's rules.

Status codes follow the OTLP specification: INVALID_ARGUMENT for a malformed
message, UNAUTHENTICATED without a key,
RESOURCE_EXHAUSTED when a message is over the size limit or more than
``max_concurrent_requests`` calls are in flight (grpcio enforces both),
UNAVAILABLE with a retry hint when the receiver cannot keep up.
"""

from __future__ import annotations

from concurrent import futures
from typing import Callable, FrozenSet, Optional

import grpc
from google.protobuf.message import Message

from ..serving import HttpError, api_key_from
from ..webserver import Limits
from .core import Overloaded, ReceiverCore
from .decode import DecodeError
from .export import PROTOBUF, export_logs, export_traces
from .http import TOKEN_HEADER, caller_tenant

_SERVICES = {
    "opentelemetry.proto.collector.trace.v1.TraceService": export_traces,
    "opentelemetry.proto.collector.logs.v1.LogsService": export_logs,
}


def _tenant(core: ReceiverCore, tokens: FrozenSet[str], context: grpc.ServicerContext) -> Optional[str]:
    metadata = {key.lower(): value for key, value in context.invocation_metadata()}
    headers = {"X-API-Key": metadata.get("x-api-key", ""), "Authorization": metadata.get("authorization", "")}
    try:
        return caller_tenant(core, tokens, metadata.get(TOKEN_HEADER.lower()), api_key_from(headers))
    except HttpError as error:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, error.message)
    return None  # not reached: abort raises


def _serialized(response: Message) -> bytes:
    return response.SerializeToString()


class _Export:
    """One ``Export`` method. It takes the message's raw bytes (no deserializer), so that gRPC and HTTP
    decode alike, admission comes before any decoding, and a malformed message is INVALID_ARGUMENT."""

    def __init__(self, core: ReceiverCore, tokens: FrozenSet[str],
                 export: Callable[[ReceiverCore, bytes, str, str], Message]) -> None:  # fmt: skip
        self.core, self.tokens, self.export = core, tokens, export

    def __call__(self, body: bytes, context: grpc.ServicerContext) -> Message:
        tenant = _tenant(self.core, self.tokens, context) or ""
        try:
            self.core.admit(tenant)
            return self.export(self.core, body, PROTOBUF, tenant)
        except Overloaded as exc:
            context.set_trailing_metadata((("retry-after", str(exc.retry_after_s)),))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed OTLP message: {exc}")
        except RecursionError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed OTLP message: nested too deeply")
        raise AssertionError("not reached: abort raises")


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
    for service, export in _SERVICES.items():
        handler = grpc.unary_unary_rpc_method_handler(_Export(core, tokens, export),
                                                      response_serializer=_serialized)  # fmt: skip
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Export": handler}),))
    port = server.add_insecure_port(address)
    server.start()
    return server, port
