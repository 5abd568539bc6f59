"""The receiver as one object: core, OTLP/HTTP and OTLP/gRPC servers, started and stopped together."""

from __future__ import annotations

import dataclasses
from typing import Any, FrozenSet, Optional, Sequence

from ..webserver import Limits, ServerThread
from .core import ReceiverCore
from .grpc_server import start_grpc
from .http import ReceiverService


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
        limits: Optional[Limits] = None,
        **core_options: Any,
    ) -> None:
        endpoint = forward_to.rstrip("/")
        if not endpoint.endswith("/v1/events"):
            endpoint += "/v1/events"
        self.core = ReceiverCore(endpoint, api_key, pass_through=pass_through, **core_options)
        self.tokens: FrozenSet[str] = frozenset(tokens)
        limits = limits or Limits()
        overrides = {k: v for k, v in (("max_body_bytes", max_body_bytes),
                                       ("max_decompressed_bytes", max_decompressed_bytes)) if v}  # fmt: skip
        if overrides:
            merged = {"max_body_bytes": limits.max_body_bytes, "max_decompressed_bytes": limits.max_decompressed_bytes,
                      **overrides}  # fmt: skip
            budget = max(limits.budget_bytes, 2 * (merged["max_body_bytes"] + merged["max_decompressed_bytes"]))
            limits = dataclasses.replace(limits, budget_bytes=budget, **overrides)
        self.limits = limits
        host, port = _host_port(http_address)
        self.http = ServerThread(ReceiverService(self.core, self.tokens, limits), host, port, name="receiver-http")
        self._grpc_address = grpc_address
        self._grpc: Any = None
        self.grpc_port: Optional[int] = None

    @property
    def http_url(self) -> str:
        return self.http.url

    def start(self) -> "Receiver":
        self.http.start()
        if self._grpc_address:
            self._grpc, self.grpc_port = start_grpc(self._grpc_address, self.core, self.tokens, self.limits)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, then map and forward what is buffered within ``timeout_s`` (the rest is spooled)."""
        self.http.stop()
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(2.0)
        self.core.close(timeout_s)

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
