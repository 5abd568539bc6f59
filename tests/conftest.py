"""Shared fixtures: real servers on 127.0.0.1, never mocks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

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


APP = ROOT / "tests" / "apps" / "llm_app.py"


def app_env(backend_url: str, llm_url: str, spool_dir: str, **extra: str) -> Dict[str, str]:
    """Environment for tests/apps/llm_app.py: PromptWall at the backend, OpenAI at the fake LLM."""
    env = dict(os.environ)
    env.update(
        PROMPTWALL_API_KEY=API_KEY,
        PROMPTWALL_BASE_URL=backend_url,
        PROMPTWALL_SPOOL_DIR=spool_dir,
        OPENAI_BASE_URL=llm_url + "/v1",
        OPENAI_API_KEY="sk-fake",
        OTEL_SERVICE_NAME="e2e-app",
        OTEL_RESOURCE_ATTRIBUTES="service.version=2.0",
        OTEL_METRICS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    env.update(extra)
    return env


def run_app(mode: str, env: Dict[str, str], *args: str, timeout: float = 120) -> "subprocess.CompletedProcess[str]":
    """Run the test app (``code`` or ``zero`` under opentelemetry-instrument) to completion."""
    if mode == "zero":
        command = [str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, str(APP), "zero", *args]
    else:
        command = [sys.executable, str(APP), "code", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def stored_events(url: str, key: str = API_KEY, **params: Any) -> List[Dict[str, Any]]:
    response = httpx.get(url + "/api/console/requests", params={"limit": 1000, **params}, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["requests"]))  # oldest first
