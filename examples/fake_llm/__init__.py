"""Deterministic fake OpenAI-compatible server for tests and examples."""

from __future__ import annotations

from .server import start_fake_llm

__all__ = ["start_fake_llm"]
