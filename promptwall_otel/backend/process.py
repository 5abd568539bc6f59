"""Run the local backend as a child process: for the demo, the tests and the console.

A real process on a real port, so that whoever drives it exercises exactly
what a user runs with ``promptwall-otel serve``. Keys reach the child through
its environment, never its command line (which any user can read in ``ps``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import IO, List, Optional, Sequence

READY_PREFIX = "promptwall-otel backend listening on "
CONSOLE_PREFIX = "promptwall-otel console (open in a browser): "


class LocalBackend:
    """``promptwall-otel serve`` in a child process; ``url`` is known once it listens.

    Use as a context manager. ``port=0`` picks a free port.
    """

    def __init__(
        self,
        db: str = ":memory:",
        api_keys: Sequence[str] = (),
        admin_key: Optional[str] = None,
        port: int = 0,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        self.db = db
        self.api_keys = list(api_keys)
        self.admin_key = admin_key
        self.port = port
        self.host = host
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.url = ""
        self.output: List[str] = []
        self._process: Optional[subprocess.Popen[str]] = None

    def __repr__(self) -> str:
        return f"LocalBackend(url={self.url!r}, db={self.db!r})"

    def start(self) -> "LocalBackend":
        command = [sys.executable, "-m", "promptwall_otel", "serve", "--host", self.host,
                   "--port", str(self.port), "--db", self.db, *self.extra_args]  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1", PROMPTWALL_LOCAL_KEYS=",".join(self.api_keys),
                   PROMPTWALL_LOCAL_ADMIN_KEY=self.admin_key or "")  # fmt: skip
        env.pop("PROMPTWALL_LOCAL_KEYS_FILE", None)
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(self._process.stdout, ready), daemon=True).start()
        if not ready.wait(self.startup_timeout) or not self.url:
            self.stop()
            raise RuntimeError("local backend did not start:\n" + "".join(self.output))
        return self

    def _pump(self, stream: Optional[IO[str]], ready: threading.Event) -> None:
        # Keep reading so the child never blocks on a full pipe.
        assert stream is not None
        for line in stream:
            self.output.append(line)
            if line.startswith(READY_PREFIX) and not self.url:
                self.url = line[len(READY_PREFIX):].strip()
                ready.set()
        ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing gets to clean up."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __enter__(self) -> "LocalBackend":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

