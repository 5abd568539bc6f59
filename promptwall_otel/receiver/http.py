"""OTLP/HTTP front end: ``POST /v1/traces`` and ``/v1/logs`` (protobuf or JSON), ``GET /healthz``.

Answers follow the OTLP specification: the Export response in the request's
encoding, ``partial_success`` for spans that could not be read, 400 for a
malformed body, 413 over the size limits, 415 for other content types or
encodings (the reply names what is supported), 401 when authentication is
required and missing, 503 with ``Retry-After`` when the receiver cannot keep
up. Bodies may be chunked and ``gzip``, ``deflate`` or ``zstd`` encoded, as
the Collector's OTLP receiver accepts them; the connection-level bounds are
``promptwall_otel.webserver``'s.
"""

from __future__ import annotations

import json
import logging
from typing import FrozenSet, Optional

from google.protobuf import json_format
from google.protobuf.message import Message

from ..serving import HttpError, api_key_from
from ..webserver import HttpService, Limits, Request, Response, json_response
from .core import Overloaded, ReceiverCore
from .decode import DecodeError
from .export import JSON, PROTOBUF, export_logs, export_traces

logger = logging.getLogger("promptwall_otel.receiver")

TOKEN_HEADER = "X-Receiver-Token"
DEFAULT_LIMITS = Limits()
DEFAULT_MAX_BODY_BYTES = DEFAULT_LIMITS.max_body_bytes
DEFAULT_MAX_DECOMPRESSED_BYTES = DEFAULT_LIMITS.max_decompressed_bytes


def caller_tenant(core: ReceiverCore, tokens: FrozenSet[str], token: Optional[str], caller_key: Optional[str]) -> str:
    """Inbound authentication, then whose PromptWall key the events go out with; HttpError(401) if none."""
    if tokens and token not in tokens:
        raise HttpError(401, f"missing or invalid {TOKEN_HEADER}")
    tenant = core.tenant_key(caller_key)
    if not tenant:
        raise HttpError(401, "no PromptWall key: send X-API-Key (or Authorization: Bearer), or start the receiver with --api-key")
    return tenant


class ReceiverService(HttpService):
    """The OTLP/HTTP ASGI application in front of one :class:`ReceiverCore`."""

    def __init__(self, core: ReceiverCore, tokens: FrozenSet[str] = frozenset(), limits: Optional[Limits] = None) -> None:
        super().__init__(limits)
        self.core = core
        self.tokens = tokens

    async def handle(self, request: Request) -> Response:
        path = request.path
        if request.method in ("GET", "HEAD"):
            if path == "/healthz":
                return json_response(200, {"ok": True, **self.core.snapshot()})
            raise HttpError(404, "not found")
        if request.method != "POST":
            raise HttpError(405, f"method {request.method} not allowed")
        if path not in ("/v1/traces", "/v1/logs"):
            raise HttpError(404, "not found")
        tenant = caller_tenant(self.core, self.tokens, request.headers.get(TOKEN_HEADER), api_key_from(request.headers))
        try:
            self.core.admit(tenant)  # refuse before decoding what could not be forwarded
            body, media_type = await request.body((PROTOBUF, JSON))
            return await self.run(self._export, path, body, media_type, tenant)
        except Overloaded as exc:
            raise HttpError(503, str(exc), {"Retry-After": str(exc.retry_after_s)}) from None

    def _export(self, path: str, body: bytes, media_type: str, tenant: str) -> Response:
        try:
            export = export_traces if path == "/v1/traces" else export_logs
            response: Message = export(self.core, body, media_type, tenant)
        except DecodeError as exc:
            raise HttpError(400, f"malformed OTLP body: {exc}") from None
        except RecursionError:
            raise HttpError(400, "malformed OTLP body: nested too deeply") from None
        if media_type == JSON:
            return Response(200, json.dumps(json_format.MessageToDict(response)).encode(), JSON)
        return Response(200, response.SerializeToString(), PROTOBUF)
