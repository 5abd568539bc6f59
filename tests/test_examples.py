"""The examples run as they are, end to end, against real servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_three_instrumented_apps_and_prints_what_promptwall_received() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "code path: Echo: Why was I charged twice this month?" in out
    assert "zero code: Echo: Do you ship to Canada?" in out
    assert "session conv-lisbon-weekend: 3 turns" in out
    assert "traveller-17: Add a day trip to Sintra" in out
    assert "the retry: skipped=1" in out
    assert "8 events, 137 tokens (93 in / 44 out): $0.004110 at $30 per 1M tokens" in out
