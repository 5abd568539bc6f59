"""OTLP/HTTP front end: ``POST /v1/traces`` and ``/v1/logs`` (protobuf or JSON, gzip), ``GET /healthz``.

Answers follow the OTLP specification: the Export response in the request's
encoding, ``partial_success`` for spans that could not be read, 400 for a
malformed body, 413 over the size limits, 415 for other content types, 401
when authentication is required and missing, 503 with ``Retry-After`` when
the receiver cannot keep up.
"""

from __future__ import annotations

import json
import logging
from typing import FrozenSet, Optional, Tuple

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .._httpserver import HttpError, JsonHandler, QuietServer, api_key_from
from .core import Overloaded, ReceiverCore
from .decode import (
    DecodeError,
    decode_logs_json,
    decode_logs_protobuf,
    decode_traces_json,
    decode_traces_protobuf,
    log_views,
    span_views,
)

logger = logging.getLogger("promptwall_otel.receiver")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TOKEN_HEADER = "X-Receiver-Token"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024


class ReceiverHttpServer(QuietServer):
    def __init__(
        self,
        address: Tuple[str, int],
        core: ReceiverCore,
        tokens: FrozenSet[str] = frozenset(),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    ) -> None:
        self.core = core
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes
        self.max_decompressed_bytes = max_decompressed_bytes
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def caller_tenant(core: ReceiverCore, tokens: FrozenSet[str], token: Optional[str], caller_key: Optional[str]) -> str:
    """Inbound authentication, then whose PromptWall key the events go out with; HttpError(401) if none."""
    if tokens and token not in tokens:
        raise HttpError(401, f"missing or invalid {TOKEN_HEADER}")
    tenant = core.tenant_key(caller_key)
    if not tenant:
        raise HttpError(401, "no PromptWall key: send X-API-Key (or Authorization: Bearer), or start the receiver with --api-key")
    return tenant


class _Handler(JsonHandler):
    server: ReceiverHttpServer

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0].rstrip("/") == "/healthz":
            self.send_json(200, {"ok": True, **self.server.core.snapshot()})
        else:
            self.send_error_json(HttpError(404, "not found"))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        routes = {"/v1/traces": self._traces, "/v1/logs": self._logs}
        try:
            route = routes.get(path)
            if route is None:
                raise HttpError(404, "not found")
            tenant = caller_tenant(self.server.core, self.server.tokens, self.headers.get(TOKEN_HEADER),
                                   api_key_from(self.headers))  # fmt: skip
            body, media_type = self.read_body(self.server.max_body_bytes, self.server.max_decompressed_bytes,
                                              (PROTOBUF, JSON))  # fmt: skip
            response = route(body, media_type, tenant)
            self._reply(response, media_type)
        except DecodeError as exc:
            self.send_error_json(HttpError(400, f"malformed OTLP body: {exc}"))
        except Overloaded as exc:
            self.send_error_json(HttpError(503, str(exc), {"Retry-After": str(exc.retry_after_s)}))
        except HttpError as error:
            self.send_error_json(error)

    def _traces(self, body: bytes, media_type: str, tenant: str) -> Message:
        request = (decode_traces_json if media_type == JSON else decode_traces_protobuf)(body)
        views, unreadable = span_views(request)
        self.server.core.accept_spans(views, tenant)
        response = ExportTraceServiceResponse()
        if unreadable:
            self.server.core.counters["spans_rejected"] += unreadable
            response.partial_success.rejected_spans = unreadable
            response.partial_success.error_message = f"{unreadable} spans had invalid trace or span ids"
        return response

    def _logs(self, body: bytes, media_type: str, tenant: str) -> Message:
        request = (decode_logs_json if media_type == JSON else decode_logs_protobuf)(body)
        self.server.core.accept_logs(log_views(request), tenant)
        return ExportLogsServiceResponse()

    def _reply(self, response: Message, media_type: str) -> None:
        if media_type == JSON:
            payload = json.dumps(json_format.MessageToDict(response)).encode()
        else:
            payload = response.SerializeToString()
        self.send_bytes(200, payload, media_type)


