"""Shared fixtures: real servers on 127.0.0.1, never mocks."""

from __future__ import annotations

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
