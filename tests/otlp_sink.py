"""Stand-in receivers: an OTLP/HTTP collector and a /v1/events endpoint that only count what arrives."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Tuple

import orjson  # as cheap a parse as the OTLP sink's C protobuf one
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class _Sink:
    """A threaded HTTP server on a free port whose POSTs go to ``receive(body, headers) -> (reply, type)``."""

    path = ""

    def __init__(self) -> None:
        receive = self.receive

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                reply, content_type = receive(body)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    receive: Callable[[bytes], Tuple[bytes, str]]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class OtlpSink(_Sink):
    """Counts the spans a stock OTLP/HTTP exporter sends (``url`` is its traces endpoint)."""

    path = "/v1/traces"

    def __init__(self) -> None:
        self.span_names: List[str] = []
        super().__init__()

    def receive(self, body: bytes) -> Tuple[bytes, str]:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.span_names.extend(span.name for span in scope_spans.spans)
        return ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"


class EventsSink(_Sink):
    """Acknowledges ``POST /v1/events`` like PromptWall and keeps the request_ids (``url`` is the base URL)."""

    def __init__(self) -> None:
        self.request_ids: List[str] = []
        super().__init__()

    def receive(self, body: bytes) -> Tuple[bytes, str]:
        events = orjson.loads(body)["events"]
        self.request_ids.extend(event["request_id"] for event in events)
        reply = {"ok": True, "accepted": len(events), "skipped": 0, "rejected": [], "total": len(events)}
        return json.dumps(reply).encode(), "application/json"
