"""Outages across processes: what could not be sent is spooled, and a later process delivers it once."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Set

from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY, APP, app_env, run_app, stored_events

REPLAY = "import promptwall_otel, opentelemetry.trace as t; promptwall_otel.configure(); t.get_tracer_provider().shutdown()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spooled_ids(directory: Path) -> Set[str]:
    ids: Set[str] = set()
    for path in directory.glob("*.jsonl*"):
        data = path.read_bytes()
        for line in (gzip.decompress(data) if path.name.endswith(".gz") else data).splitlines():
            if line.strip():
                ids.add(json.loads(line)["request_id"])
    return ids


def replay(env: Dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", REPLAY], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_backend_down_then_up_delivers_everything_once(fake_llm: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = app_env(url, fake_llm, str(tmp_path))
    started = time.monotonic()
    done = run_app("code", env, "--calls", "10")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30, "exits within the shutdown bound while the backend is down"
    waiting = spooled_ids(tmp_path)
    assert len(waiting) == 13
    with LocalBackend(port=port, api_keys=[API_KEY]) as backend:
        replay(env)
        replay(env)  # a second start finds nothing left to send
        stored = stored_events(backend.url)
    assert sorted(r["request_id"] for r in stored) == sorted(waiting)
    assert not list(tmp_path.glob("*.jsonl*"))


def test_kill_9_loses_nothing_that_reached_the_spool(fake_llm: str, tmp_path: Path) -> None:
    port = free_port()
    env = app_env(f"http://127.0.0.1:{port}", fake_llm, str(tmp_path))
    app = subprocess.Popen([sys.executable, str(APP), "code", "--calls", "400"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(tmp_path.glob("*.jsonl.gz"))) < 2:
        time.sleep(0.05)
    os.kill(app.pid, signal.SIGKILL)
    app.wait()
    waiting = spooled_ids(tmp_path)
    assert len(waiting) >= 2
    with LocalBackend(port=port, api_keys=[API_KEY]) as backend:
        replay(env)
        stored: List[str] = [r["request_id"] for r in stored_events(backend.url)]
    assert sorted(stored) == sorted(waiting), "each spooled record exactly once"
