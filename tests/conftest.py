"""Shared fixtures: real servers on 127.0.0.1, never mocks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from promptwall_otel.backend import LocalBackend

API_KEY = "pw_test_key"


@pytest.fixture(scope="session")
def backend() -> Iterator[LocalBackend]:
    """One real backend process for the session, in memory, with a configured key."""
    with LocalBackend(api_keys=[API_KEY]) as running:
        yield running


@pytest.fixture()
def api(backend: LocalBackend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.url, headers={"X-API-Key": API_KEY}, timeout=10) as client:
        yield client


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "fake_llm"))


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[str]:
    """The fake OpenAI-compatible server shipped in examples/, on a free port; yields its root URL."""
    from server import start_fake_llm  # examples/fake_llm/server.py

    server, url = start_fake_llm()
    yield url
    server.shutdown()
    server.server_close()
