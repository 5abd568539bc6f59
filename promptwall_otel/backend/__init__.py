"""The embedded default: a local PromptWall-compatible backend on SQLite.

Importing this package needs no server library: :class:`LocalBackend` runs
the server in a child process, and the CLI reads its constants from here in
the exporter-only install. The server side (:class:`BackendServer`, which
needs the ``server`` extra) is imported on first use.
"""

from importlib import import_module
from typing import Any

from .process import LocalBackend
from .store import CREDIT_USD_PER_MILLION_TOKENS, EventStore

__all__ = [
    "BackendConfig",
    "BackendServer",
    "CREDIT_USD_PER_MILLION_TOKENS",
    "EventStore",
    "LocalBackend",
    "ingest",
]

_NEEDS_SERVER_EXTRA = ("BackendConfig", "BackendServer", "ingest")


def __getattr__(name: str) -> Any:
    if name in _NEEDS_SERVER_EXTRA:
        return getattr(import_module(".server", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
