"""Ordinary mistakes get one line naming what is wrong and the fix, exit code 1, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from promptwall_otel.backend import LocalBackend
from tests.conftest import ROOT


def cli(*args: str) -> "subprocess.CompletedProcess[str]":
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWALL_")}
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "promptwall_otel", *args], env=environ, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def one_line_error(done: "subprocess.CompletedProcess[str]") -> str:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_no_backend_running() -> None:
    assert "cannot reach the backend at http://127.0.0.1:9" in one_line_error(cli("events", "--url", "http://127.0.0.1:9"))


def test_a_url_without_a_scheme() -> None:
    assert "needs http:// or https://" in one_line_error(cli("billing", "--url", "127.0.0.1:8787"))


def test_no_key_given(backend: LocalBackend) -> None:
    assert "no key given" in one_line_error(cli("sessions", "--url", backend.url))


def test_a_port_in_use(backend: LocalBackend) -> None:
    port = backend.url.rsplit(":", 1)[1]
    error = one_line_error(cli("serve", "--port", port, "--db", ":memory:"))
    assert f"--port {port}" in error and "already in use" in error
