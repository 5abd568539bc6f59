"""``promptwall-otel doctor`` against a real backend, with the real instrumentations installed here."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict

from promptwall_otel.backend import LocalBackend
from promptwall_otel.doctor import broken_pairs
from tests.conftest import API_KEY, ROOT


def doctor(**env: str) -> "subprocess.CompletedProcess[str]":
    environ: Dict[str, str] = {k: v for k, v in os.environ.items()
                               if not k.startswith(("PROMPTWALL_", "OTEL_INSTRUMENTATION_GENAI"))}  # fmt: skip
    environ.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "promptwall_otel", "doctor"], env=environ, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_a_working_setup_exits_0_and_names_what_it_checked(backend: LocalBackend, tmp_path: object) -> None:
    done = doctor(PROMPTWALL_API_KEY=API_KEY, PROMPTWALL_BASE_URL=backend.url, PROMPTWALL_SPOOL_DIR=str(tmp_path),
                  OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "opentelemetry-instrumentation-openai-v2 2.4b0: loads and instruments; content capture on" in out
    assert "openinference-instrumentation-openai" in out and "opentelemetry-instrumentation-openai " in out
    assert "takes the key" in out and "events would flow" in out
    assert API_KEY not in out + done.stderr


def test_content_capture_off_is_said_without_blocking(backend: LocalBackend) -> None:
    done = doctor(PROMPTWALL_API_KEY=API_KEY, PROMPTWALL_BASE_URL=backend.url)
    assert done.returncode == 0
    assert "content capture OFF" in done.stdout and "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true" in done.stdout


def test_a_refused_key_a_missing_key_and_a_dead_endpoint_exit_1(backend: LocalBackend) -> None:
    wrong = doctor(PROMPTWALL_API_KEY="pw_not_this_one", PROMPTWALL_BASE_URL=backend.url)
    assert wrong.returncode == 1 and "refused the key" in wrong.stdout and "pw_not_this_one" not in wrong.stdout
    missing = doctor(PROMPTWALL_BASE_URL=backend.url)
    assert missing.returncode == 1 and "PROMPTWALL_API_KEY is not set" in missing.stdout
    dead = doctor(PROMPTWALL_API_KEY=API_KEY, PROMPTWALL_BASE_URL="http://127.0.0.1:9")
    assert dead.returncode == 1 and "http://127.0.0.1:9/v1/events does not answer" in dead.stdout
    schemeless = doctor(PROMPTWALL_API_KEY=API_KEY, PROMPTWALL_BASE_URL="127.0.0.1:8787")
    assert schemeless.returncode == 1 and "no http:// or https://" in schemeless.stdout


def test_the_known_broken_pair_is_named_with_its_fix() -> None:
    found = broken_pairs({"opentelemetry-instrumentation-openai-v2": "2.4b0", "opentelemetry-util-genai": "1.3b0"})
    assert len(found) == 1 and "opentelemetry-util-genai==0.4b0" in found[0]
    assert broken_pairs({"opentelemetry-instrumentation-openai-v2": "2.4b0", "opentelemetry-util-genai": "0.4b0"}) == []


def test_version_flag() -> None:
    done = subprocess.run([sys.executable, "-m", "promptwall_otel", "--version"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)  # fmt: skip
    from promptwall_otel import __version__

    assert done.returncode == 0 and done.stdout.strip() == f"promptwall-otel {__version__}"


STARTUP = """
import logging, promptwall_otel
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
trace.set_tracer_provider(TracerProvider())
promptwall_otel.configure().shutdown()
"""


def test_configure_says_where_records_go_and_warns_about_content_capture(backend: LocalBackend) -> None:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("PROMPTWALL_", "OTEL_INSTRUMENTATION_GENAI"))}  # fmt: skip
    environ.update(PYTHONPATH=str(ROOT), PROMPTWALL_API_KEY=API_KEY, PROMPTWALL_BASE_URL=backend.url)
    done = subprocess.run([sys.executable, "-c", STARTUP], env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"INFO PromptWall: GenAI spans go to {backend.url}/v1/events" in done.stderr
    assert "WARNING PromptWall: opentelemetry-instrumentation-openai-v2 records no prompts" in done.stderr
    assert API_KEY not in done.stderr
