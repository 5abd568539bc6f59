"""``promptwall-otel spool``: an operator lists, replays and purges the spool and the dead letters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

from promptwall_otel.backend import LocalBackend
from promptwall_otel.transport import Spool
from tests.conftest import API_KEY, ROOT, stored_events


def events(run: str, count: int) -> List[bytes]:
    return [json.dumps({"request_id": f"{run}-{i}", "model": "gpt-4o-mini", "prompt_tokens": 3,
                        "completion_tokens": 2}).encode() for i in range(count)]  # fmt: skip


def cli(*args: str, **env: str) -> "subprocess.CompletedProcess[str]":
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWALL_")}
    environ.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "promptwall_otel", "spool", *args], env=environ,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_list_replay_and_purge(backend: LocalBackend, tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = Spool(str(folder), 10_000_000)
    spool.put(events("cli-queued", 30))
    spool.put(events("cli-dead-letter", 2))
    queued, poisoned = spool.claim(), spool.claim()
    assert queued is not None and poisoned is not None
    spool.release(queued)
    spool.dead_letter(poisoned)

    listed = cli("list", "--dir", str(folder))
    assert listed.returncode == 0 and "records waiting" in listed.stdout and "2 dead letters" in listed.stdout

    no_key = cli("replay", "--dir", str(folder), "--base-url", backend.url)
    assert no_key.returncode == 1 and "PROMPTWALL_API_KEY" in no_key.stdout

    sent = cli("replay", "--dir", str(folder), "--base-url", backend.url, PROMPTWALL_API_KEY=API_KEY)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert API_KEY not in sent.stdout + sent.stderr
    ids = {event["request_id"] for event in stored_events(backend.url)}
    assert {f"cli-queued-{i}" for i in range(30)} <= ids and not any(i.startswith("cli-dead-letter") for i in ids)

    assert cli("purge", "--dir", str(folder), "--dead").returncode == 2, "purge asks for --yes"
    revived = cli("replay", "--dir", str(folder), "--dead", "--base-url", backend.url, PROMPTWALL_API_KEY=API_KEY)
    assert revived.returncode == 0 and "2 dead-lettered records back" in revived.stdout
    assert {"cli-dead-letter-0", "cli-dead-letter-1"} <= {e["request_id"] for e in stored_events(backend.url)}

    Spool(str(folder), 10_000_000).put(events("cli-purged", 3))
    purged = cli("purge", "--dir", str(folder), "--yes")
    assert purged.returncode == 0 and "3 records deleted" in purged.stdout
    assert Spool(str(folder), 10_000_000).pending() == 0
