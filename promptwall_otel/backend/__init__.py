"""The embedded default: a local PromptWall-compatible backend on SQLite."""

from .process import LocalBackend
from .server import BackendConfig, BackendServer, ingest
from .store import CREDIT_USD_PER_MILLION_TOKENS, EventStore

__all__ = [
    "BackendConfig",
    "BackendServer",
    "CREDIT_USD_PER_MILLION_TOKENS",
    "EventStore",
    "LocalBackend",
    "ingest",
]
