"""Helpers for tests that attack our servers the way clients and attackers do: raw sockets, real processes."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from promptwall_otel.backend.process import READY_PREFIX


def raw_exchange(url: str, request: bytes, timeout: float = 10.0, pause_after: Optional[int] = None,
                 pause_s: float = 0.0) -> Tuple[int, Dict[str, str], bytes]:  # fmt: skip
    """Send ``request`` bytes as they are (optionally pausing after ``pause_after`` bytes); parse one reply."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        if pause_after is not None:
            sock.sendall(request[:pause_after])
            time.sleep(pause_s)
            sock.sendall(request[pause_after:])
        else:
            sock.sendall(request)
        return read_response(sock)


def read_response(sock: socket.socket) -> Tuple[int, Dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body; (0, {}, b"") if the server closed without one."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, {}, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:length]


def post_bytes(path: str, body: bytes, host: str = "x", headers: Sequence[str] = ()) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def chunked(path: str, parts: Sequence[bytes], headers: Sequence[str] = ()) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    out = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()
    for part in parts:
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


class ServerProcess:
    """``python -m promptwall_otel ARGS`` with its own environment and open-files limit; knows its RSS."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None, nofile: Optional[int] = None,
                 ready_prefix: str = READY_PREFIX) -> None:  # fmt: skip
        self.args = list(args)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWALL_LOCAL")}
        self.env.update(env or {}, PYTHONUNBUFFERED="1")
        self.nofile = nofile
        self.ready_prefix = ready_prefix
        self.lines: List[str] = []
        self.url = ""
        self.process: Optional[subprocess.Popen[str]] = None

    def _limit(self) -> None:  # runs in the child before exec
        if self.nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def __enter__(self) -> "ServerProcess":
        self.process = subprocess.Popen([sys.executable, "-m", "promptwall_otel", *self.args], env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        preexec_fn=self._limit)  # fmt: skip
        ready = threading.Event()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                if line.startswith(self.ready_prefix) and not self.url:
                    rest = line[len(self.ready_prefix):].strip()
                    self.url = rest.split("http=", 1)[1].split()[0] if "http=" in rest else rest
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(30) or not self.url:
            self.__exit__()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_mib(self, peak: bool = False) -> float:
        """Resident memory now (or its peak, ``VmHWM``) in MiB."""
        assert self.process is not None
        field = "VmHWM:" if peak else "VmRSS:"
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no " + field)

    def cmdline(self) -> str:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode()

