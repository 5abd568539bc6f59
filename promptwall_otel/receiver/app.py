"""The receiver as one object: core, OTLP/HTTP and OTLP/gRPC servers, started and stopped together."""

from __future__ import annotations

import threading
from typing import Any, FrozenSet, Optional, Sequence

from .core import ReceiverCore
from .grpc_server import start_grpc
from .http import ReceiverHttpServer


def _host_port(address: str) -> "tuple[str, int]":
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Receiver:
    """``promptwall-otel receive`` in-process. ``grpc_address=None`` runs HTTP only."""

    def __init__(
        self,
        forward_to: str,
        http_address: str = "127.0.0.1:4318",
        grpc_address: Optional[str] = "127.0.0.1:4317",
        *,
        api_key: Optional[str] = None,
        pass_through: bool = True,
        tokens: Sequence[str] = (),
        max_body_bytes: Optional[int] = None,
        max_decompressed_bytes: Optional[int] = None,
        **core_options: Any,
    ) -> None:
        endpoint = forward_to.rstrip("/")
        if not endpoint.endswith("/v1/events"):
            endpoint += "/v1/events"
        self.core = ReceiverCore(endpoint, api_key, pass_through=pass_through, **core_options)
        self.tokens: FrozenSet[str] = frozenset(tokens)
        limits = {k: v for k, v in (("max_body_bytes", max_body_bytes),
                                    ("max_decompressed_bytes", max_decompressed_bytes)) if v}  # fmt: skip
        self.http = ReceiverHttpServer(_host_port(http_address), self.core, self.tokens, **limits)
        self._grpc_address = grpc_address
        self._grpc: Any = None
        self.grpc_port: Optional[int] = None
        self._max_message = limits.get("max_body_bytes")

    @property
    def http_url(self) -> str:
        return self.http.url

    def start(self) -> "Receiver":
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                         name="promptwall-receiver-http").start()  # fmt: skip
        if self._grpc_address:
            extra = {"max_message_bytes": self._max_message} if self._max_message else {}
            self._grpc, self.grpc_port = start_grpc(self._grpc_address, self.core, self.tokens, **extra)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, then map and forward what is buffered within ``timeout_s`` (the rest is spooled)."""
        self.http.shutdown()
        self.http.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(2.0)
        self.core.close(timeout_s)

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
