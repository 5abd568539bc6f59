"""The examples run as they are, end to end, against real servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_and_prints_events_and_billing() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "re-sending them all: 4 skipped as duplicates" in out
    assert "What is the capital of France?" in out
    assert "4 events, 1333 tokens (1223 in / 110 out): $0.039990" in out
