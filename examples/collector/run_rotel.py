"""Run the Rotel collector (PyPI package ``rotel``) as a real OpenTelemetry Collector in a test path.

    app --OTLP--> rotel (127.0.0.1:grpc_port / :http_port) --OTLP/HTTP, gzip, X-API-Key--> export_endpoint

Stdlib only, plus the ``rotel`` wheel (``pip install rotel==0.0.1a15``), which ships the
collector as the executable ``rotel/rotel-agent`` inside the package. We launch that binary
directly, in the foreground (``rotel-agent start``), configured only by ``ROTEL_*`` environment
variables, rather than through ``rotel.Rotel(...).start()``: the Python API always passes
``--daemon`` (a detached process tracked by a pid file, /tmp/rotel-agent.pid by default,
that outlives the test if nobody stops it), while a foreground child is a plain
``subprocess.Popen`` that the test owns, can wait on, and that logs to its stdout.

Every variable name below was checked against ``rotel-agent start --help`` of the binary in
rotel 0.0.1a15 (it reports itself as ``rotel 0.0.1-alpha10``), and end to end against a
recording HTTP sink: spans and log records sent over OTLP/HTTP and OTLP/gRPC arrive as
``POST {export_endpoint}/v1/traces`` and ``POST {export_endpoint}/v1/logs`` with
``content-type: application/x-protobuf``, ``content-encoding: gzip`` and the custom headers.

Usage in a test::

    from run_rotel import free_port, rotel_output, start_rotel, stop_rotel, wait_ready

    grpc_port, http_port = free_port(), free_port()
    proc = start_rotel(grpc_port, http_port, "http://127.0.0.1:4318", {"X-API-Key": "pk_test"})
    try:
        wait_ready(proc, grpc_port, http_port)
        ...  # point the app's OTLP exporter at http://127.0.0.1:{http_port} or 127.0.0.1:{grpc_port}
    finally:
        stop_rotel(proc)        # SIGTERM: rotel flushes what it has batched, then exits 0
        print(rotel_output(proc))  # its log, kept in a temporary file

Run ``python examples/collector/run_rotel.py`` for a self-check against a throwaway sink.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import IO, Mapping, Optional, Union

__all__ = [
    "RotelNotReady", "free_port", "rotel_binary", "rotel_env", "rotel_output", "start_rotel", "stop_rotel", "wait_ready",
]

# Fast-test defaults (rotel's own defaults are in the comments).
DEFAULT_BATCH_TIMEOUT = "10ms"  # ROTEL_BATCH_TIMEOUT, default 200ms: the delay before a partial batch is exported
DEFAULT_RETRY_INITIAL_BACKOFF = "100ms"  # default 5s: first retry of a 429/5xx/refused export
DEFAULT_RETRY_MAX_BACKOFF = "1s"  # default 30s
DEFAULT_RETRY_MAX_ELAPSED_TIME = "10s"  # default 300s: then the batch is dropped
DEFAULT_REQUEST_TIMEOUT = "5s"  # default 5s


class RotelNotReady(RuntimeError):
    """Rotel exited, or did not open its OTLP ports in time."""


def rotel_binary() -> Path:
    """Path of the collector executable shipped inside the rotel wheel."""
    try:
        import rotel  # noqa: PLC0415  (the package only carries the binary and a thin launcher)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("the 'rotel' package is not installed: pip install rotel==0.0.1a15") from exc
    path = Path(rotel.__file__).resolve().parent / "rotel-agent"
    if not path.is_file():  # pragma: no cover
        raise RuntimeError(f"rotel is installed but {path} is missing (no wheel for this platform?)")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now. Rotel cannot be given port 0: with
    127.0.0.1:0 the 0.0.1a15 binary panics at startup (agent.rs unwrap on None)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def format_headers(headers: Optional[Mapping[str, str]]) -> str:
    """``{"X-API-Key": "k", "X-Other": "v"}`` -> ``X-API-Key=k,X-Other=v``: rotel's format for
    ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS. It splits pairs on ',' and each pair on the first '='
    (so '=' inside a value is fine, and so are spaces); there is no escape for ','."""
    parts = []
    for key, value in (headers or {}).items():
        key, value = str(key), str(value)
        if not key or any(c in key for c in ",= \t\r\n"):
            raise ValueError(f"header name {key!r} cannot be passed to rotel")
        if any(c in value for c in ",\r\n"):
            raise ValueError(f"header {key!r}: rotel cannot carry a value containing ',' or a newline")
        parts.append(f"{key}={value}")
    return ",".join(parts)


def rotel_env(
    grpc_port: int,
    http_port: int,
    export_endpoint: str,
    headers: Optional[Mapping[str, str]] = None,
    *,
    protocol: str = "http",
    compression: str = "gzip",
    batch_timeout: Optional[str] = DEFAULT_BATCH_TIMEOUT,
    disable_batching: bool = False,
    metrics: bool = False,
    host: str = "127.0.0.1",
    extra: Optional[Mapping[str, str]] = None,
    base_env: Optional[Mapping[str, str]] = None,
) -> dict:
    """The environment for ``rotel-agent start``. Any ROTEL_* already in ``base_env``
    (default: os.environ) is dropped first, so a developer's shell cannot change a test."""
    env = {k: v for k, v in (os.environ if base_env is None else base_env).items() if not k.startswith("ROTEL_")}
    env.update(
        {
            # Receivers (rotel's defaults are localhost:4317 / localhost:4318).
            "ROTEL_OTLP_GRPC_ENDPOINT": f"{host}:{grpc_port}",
            "ROTEL_OTLP_HTTP_ENDPOINT": f"{host}:{http_port}",
            # One OTLP exporter for all signals; metrics are refused at the door below
            # (POST /v1/metrics -> 404), since the promptwall receiver takes traces and logs only.
            "ROTEL_EXPORTER": "otlp",
            # Base URL: rotel appends /v1/traces and /v1/logs (any path in it is kept as a prefix).
            "ROTEL_OTLP_EXPORTER_ENDPOINT": export_endpoint.rstrip("/"),
            "ROTEL_OTLP_EXPORTER_PROTOCOL": protocol,  # "http" (protobuf) or "grpc"; rotel's default is grpc
            "ROTEL_OTLP_EXPORTER_COMPRESSION": compression,  # "gzip" (default) or "none"
            "ROTEL_OTLP_EXPORTER_REQUEST_TIMEOUT": DEFAULT_REQUEST_TIMEOUT,
            "ROTEL_OTLP_EXPORTER_RETRY_INITIAL_BACKOFF": DEFAULT_RETRY_INITIAL_BACKOFF,
            "ROTEL_OTLP_EXPORTER_RETRY_MAX_BACKOFF": DEFAULT_RETRY_MAX_BACKOFF,
            "ROTEL_OTLP_EXPORTER_RETRY_MAX_ELAPSED_TIME": DEFAULT_RETRY_MAX_ELAPSED_TIME,
            "ROTEL_LOG_FORMAT": "text",
            "NO_COLOR": "1",
        }
    )
    if not metrics:
        env["ROTEL_OTLP_RECEIVER_METRICS_DISABLED"] = "true"
    if headers:
        env["ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS"] = format_headers(headers)
    if batch_timeout:
        env["ROTEL_BATCH_TIMEOUT"] = batch_timeout
    if disable_batching:
        env["ROTEL_DISABLE_BATCHING"] = "true"  # one export request per incoming request
    _ensure_libpython(env)
    env.update(extra or {})
    return env


def _ensure_libpython(env: dict) -> None:
    """rotel-agent links against libpython3.X.so.1.0 (for its Python processor SDK), found
    here in Debian's libpython3.11 package. Put this interpreter's own shared libpython
    on LD_LIBRARY_PATH too, so the binary also starts where that package is missing."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    if libdir and (Path(libdir) / soname).exists():
        current = env.get("LD_LIBRARY_PATH", "")
        if libdir not in current.split(os.pathsep):
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (current, libdir) if p)


def start_rotel(
    grpc_port: int,
    http_port: int,
    export_endpoint: str,
    headers: Optional[Mapping[str, str]] = None,
    *,
    log: Union[int, IO, None] = None,
    **options,
) -> subprocess.Popen:
    """Start rotel in the foreground: OTLP/gRPC on 127.0.0.1:grpc_port, OTLP/HTTP on
    127.0.0.1:http_port, exporting traces and logs as OTLP/HTTP protobuf with gzip and
    ``headers`` to ``export_endpoint`` (a base URL such as ``http://127.0.0.1:4318``).

    ``options`` go to :func:`rotel_env` (protocol, compression, batch_timeout,
    disable_batching, metrics, extra; ``extra`` is any further ROTEL_* variable).
    Rotel logs to stdout and stderr; both go to ``log`` (a file object or
    ``subprocess.DEVNULL``), by default to an anonymous temporary file (not a pipe, which
    nobody would drain and which would stall rotel once full): read it with
    :func:`rotel_output`. Call :func:`wait_ready` next; it takes about 10 ms here."""
    env = rotel_env(grpc_port, http_port, export_endpoint, headers, **options)
    if log is None:
        log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [str(rotel_binary()), "start"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.rotel_log = log  # type: ignore[attr-defined]
    return proc


def rotel_output(proc: subprocess.Popen, limit: int = 20000) -> str:
    """The last ``limit`` characters rotel logged, when :func:`start_rotel` kept its log."""
    log = getattr(proc, "rotel_log", None)
    if log is None or isinstance(log, int) or not hasattr(log, "seek"):
        return "(rotel's output was not kept)"
    try:
        log.flush()
        log.seek(0)
        data = log.read()
    except (OSError, ValueError):
        return "(rotel's output is unavailable)"
    text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
    return text[-limit:]


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_ready(
    proc: subprocess.Popen, grpc_port: int, http_port: int, timeout: float = 10.0, host: str = "127.0.0.1"
) -> float:
    """Block until both OTLP ports accept connections; return the seconds waited.
    Raises RotelNotReady (with rotel's output) if it exits or times out,
    e.g. 'ERROR: unable to bind to 127.0.0.1:N: Address already in use', exit code 1."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if proc.poll() is not None:
            raise RotelNotReady(f"rotel exited with code {proc.returncode}: {rotel_output(proc, 2000)}")
        if _port_open(http_port, host) and _port_open(grpc_port, host):
            return time.monotonic() - start
        if time.monotonic() > deadline:
            stop_rotel(proc)
            raise RotelNotReady(
                f"rotel did not listen on {host}:{grpc_port}/{http_port} in {timeout}s: {rotel_output(proc, 2000)}"
            )
        time.sleep(0.01)


def stop_rotel(proc: subprocess.Popen, timeout: float = 10.0) -> Optional[int]:
    """SIGTERM, then SIGKILL after ``timeout``. On SIGTERM (or SIGINT) rotel exports what it
    still holds in its batches and exits 0 within a few ms when the endpoint answers. If
    the endpoint is down or keeps failing, it gives its exporters about 3 s, logs
    'Exporters did not exit on channel close, cancelling', drops the data and exits
    (code 0 or 1). Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# --------------------------------------------------------------------------- self-check


def _self_check() -> int:  # pragma: no cover - a manual check, stdlib only
    """Rotel in the path between a stdlib OTLP/JSON client and a recording sink."""
    import gzip
    import json
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Sink(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"

    grpc_port, http_port = free_port(), free_port()
    t0 = time.monotonic()
    proc = start_rotel(grpc_port, http_port, endpoint, {"X-API-Key": "pk_selfcheck"})
    try:
        ready = wait_ready(proc, grpc_port, http_port)
        print(f"rotel {rotel_binary()} ready in {ready * 1000:.0f} ms (grpc {grpc_port}, http {http_port})")
        span = {
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat gpt-4o",
            "kind": 3, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
            "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}],
        }
        traces = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
        logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "1", "body": {"stringValue": "hi"}}]}]}]}
        sent = time.monotonic()
        for path, payload in (("/v1/traces", traces), ("/v1/logs", logs)):
            req = urllib.request.Request(
                f"http://127.0.0.1:{http_port}{path}", data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=5).read()
        while len({p for _, p, _, _ in seen}) < 2 and time.monotonic() - sent < 5:
            time.sleep(0.005)
    finally:
        code = stop_rotel(proc)
        sink.shutdown()
    ok = {p for _, p, _, _ in seen} == {"/v1/traces", "/v1/logs"}
    for t, path, hdrs, body in seen:
        raw = gzip.decompress(body) if hdrs.get("content-encoding") == "gzip" else body
        ok = ok and hdrs.get("x-api-key") == "pk_selfcheck" and hdrs.get("content-encoding") == "gzip"
        print(
            f"+{(t - sent) * 1000:.0f} ms POST {path} content-type={hdrs.get('content-type')} "
            f"content-encoding={hdrs.get('content-encoding')} x-api-key={hdrs.get('x-api-key')} "
            f"{len(body)} B on the wire, {len(raw)} B protobuf"
        )
    print(f"rotel exited with {code} after SIGTERM; total {time.monotonic() - t0:.2f} s; {'OK' if ok else 'FAILED'}")
    return 0 if ok and code == 0 else 1


if __name__ == "__main__":
    sys.exit(_self_check())
