"""Both benchmark sinks in a process of their own, as a real collector or PromptWall would be.

    python benchmarks/sinks.py   →  prints "otlp=URL events=URL", serves until killed

``GET /count`` on either answers how many spans (OTLP) or distinct records
(events) arrived, and ``POST /reset`` clears it. Receiving costs the
benchmarked process nothing this way, for the stock pipeline and ours alike.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class Sinks:
    """The child process, seen from the benchmark."""

    def __init__(self) -> None:
        self._process = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        fields = dict(part.split("=", 1) for part in self._process.stdout.readline().split())
        self.otlp_url, self.events_url = fields["otlp"], fields["events"]

    def counts(self) -> Tuple[int, int]:
        import httpx

        base = lambda url: url.rsplit("/v1/", 1)[0]  # noqa: E731
        return (int(httpx.get(base(self.otlp_url) + "/count").text), int(httpx.get(base(self.events_url) + "/count").text))

    def reset(self) -> None:
        import httpx

        for url in (self.otlp_url, self.events_url):
            httpx.post(url.rsplit("/v1/", 1)[0] + "/reset")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait()


def _with_control(sink: object, count: callable, clear: callable) -> None:  # type: ignore[valid-type]
    """Add GET /count and POST /reset to a sink's handler class."""
    handler = sink._server.RequestHandlerClass  # type: ignore[attr-defined]
    original_post = handler.do_POST

    def do_GET(self: BaseHTTPRequestHandler) -> None:  # noqa: N802
        body = str(count()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self: BaseHTTPRequestHandler) -> None:  # noqa: N802
        if self.path == "/reset":
            clear()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        original_post(self)

    handler.do_GET = do_GET
    handler.do_POST = do_POST


def main() -> None:
    from tests.otlp_sink import EventsSink, OtlpSink

    otlp, events = OtlpSink(), EventsSink()
    _with_control(otlp, lambda: len(otlp.span_names), otlp.span_names.clear)
    _with_control(events, lambda: len(set(events.request_ids)), events.request_ids.clear)
    print(f"otlp={otlp.url} events={events.url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
