"""What the fault suite's tests share: a backend that can be stopped and restarted, counted in its database."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Optional, Tuple

from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Any, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


class Backend:
    """The local backend on a fixed port and a database file, so it can be stopped and started again."""

    def __init__(self, folder: Path) -> None:
        self.db = folder / "events.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._running: Optional[LocalBackend] = None

    def start(self) -> "Backend":
        self._running = LocalBackend(db=str(self.db), port=self.port, api_keys=[API_KEY]).start()
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None

    def count(self) -> int:
        """Rows stored, all runs: the newest row's number, an index lookup (rows are never deleted, and their
        numbers have no gaps), where count(*) reads the whole table: cheap enough to sample under load."""
        if not self.db.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
                return int(conn.execute("SELECT coalesce(max(seq), 0) FROM app_events").fetchone()[0])
        except sqlite3.OperationalError:  # the schema is being created
            return 0

    def wait_stored(self, run: str, calls: int, timeout: float, step: float = 0.2) -> bool:
        """Wait until ``run`` has ``calls`` rows stored. The rows themselves are read only once the newest row's
        number says there could be that many: reading every row of a 2 GB database each half second (the long
        outage test's) took the disk and CPU the drain it waits for needed."""
        return wait_until(lambda: self.count() >= calls and self.stored(run)[0] >= calls, timeout, step)

    def stored(self, run: str) -> Tuple[int, int, int]:
        """(rows, distinct calls, prompt tokens) of this run's calls, read from the database itself."""
        if not self.db.exists():
            return 0, 0, 0
        for _ in range(50):
            try:
                with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
                    rows = conn.execute("SELECT prompt_tokens, json_extract(metadata, '$.gen_ai.response_id') "
                                        "FROM app_events").fetchall()  # fmt: skip
                break
            except sqlite3.OperationalError:  # the schema is being created, or a write holds the lock
                time.sleep(0.1)
        else:
            raise AssertionError("the backend's database stayed unreadable")
        mine = [(tokens, rid) for tokens, rid in rows if rid and rid.startswith(f"chatcmpl-{run}-")]
        return len(mine), len({rid for _, rid in mine}), sum(tokens or 0 for tokens, _ in mine)
