"""Server libraries side by side: what one small JSON POST costs the server, in CPU and in latency.

Each candidate serves the same handler (read a ~1 KB JSON body, parse it,
answer a small JSON object) in a process of its own; a client process keeps
``--connections`` keep-alive connections busy for ``--seconds``. Reported:
requests per second, the server's CPU time per request (user + system, from
/proc), and the client-side p50/p99. Candidates whose library is not
installed are skipped (aiohttp is not a dependency; install it to compare).

    python benchmarks/server_candidates.py [--seconds 5] [--connections 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.procstat import cpu_seconds  # noqa: E402
BODY = json.dumps({"request_id": "r" * 20, "model": "gpt-4o-mini", "prompt": "p" * 900, "prompt_tokens": 12}).encode()

SERVERS = {
    "uvicorn+httptools (ours: promptwall_otel.webserver)": """
import sys, orjson
from promptwall_otel.webserver import HttpService, ServerThread, json_response
class Echo(HttpService):
    async def handle(self, request):
        data, _ = await request.body(("application/json",))
        event = await self.run(orjson.loads, data)
        return json_response(200, {"ok": True, "accepted": 1, "request_id": event["request_id"]})
server = ServerThread(Echo(), "127.0.0.1", 0).start()
print(server.url, flush=True)
server.wait()
""",
    "uvicorn+httptools, bare ASGI (no limits, no worker thread)": """
import socket, orjson, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    data = b""
    while True:
        message = await receive()
        data += message.get("body", b"")
        if not message.get("more_body"):
            break
    event = orjson.loads(data)
    body = orjson.dumps({"ok": True, "accepted": 1, "request_id": event["request_id"]})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
uvicorn.Server(uvicorn.Config(app, http="httptools", lifespan="off", log_config=None, access_log=False)).run(sockets=[sock])
""",
    "aiohttp.web, parsing on a worker thread as ours does": """
import asyncio, socket, orjson
from concurrent.futures import ThreadPoolExecutor
from aiohttp import web
pool = ThreadPoolExecutor(4)
async def events(request):
    data = await request.read()
    event = await asyncio.get_running_loop().run_in_executor(pool, orjson.loads, data)
    return web.Response(body=orjson.dumps({"ok": True, "accepted": 1, "request_id": event["request_id"]}),
                        content_type="application/json")
app = web.Application()
app.router.add_post("/v1/events", events)
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
web.run_app(app, sock=sock, print=None, access_log=None)
""",
    "aiohttp.web": """
import asyncio, socket, orjson
from aiohttp import web
async def events(request):
    data = await request.read()
    event = orjson.loads(data)
    return web.Response(body=orjson.dumps({"ok": True, "accepted": 1, "request_id": event["request_id"]}),
                        content_type="application/json")
app = web.Application()
app.router.add_post("/v1/events", events)
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
web.run_app(app, sock=sock, print=None, access_log=None)
""",
}


def drive(url: str, seconds: float, connections: int) -> List[float]:
    import httpx

    latencies: List[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        mine = []
        with httpx.Client(base_url=url) as client:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = client.post("/v1/events", content=BODY, headers={"Content-Type": "application/json"})
                mine.append(time.perf_counter() - started)
                assert response.status_code == 200
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def run_one(name: str, code: str, seconds: float, connections: int) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        drive(url, 0.5, connections)  # warm up
        cpu_before = cpu_seconds(process.pid)
        latencies = drive(url, seconds, connections)
        cpu = cpu_seconds(process.pid) - cpu_before
    finally:
        process.terminate()
        process.wait(10)
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "cpu_us": cpu / len(latencies) * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    available = {}
    for name, code in SERVERS.items():
        module = "aiohttp" if "aiohttp" in name else "uvicorn"
        try:
            __import__(module)
            available[name] = code
        except ImportError:
            print(f"skipping {name}: {module} not installed")
    results: Dict[str, List[Dict[str, float]]] = {name: [] for name in available}
    for _ in range(args.rounds):  # interleaved: this VM drifts from minute to minute
        for name, code in available.items():
            results[name].append(run_one(name, code, args.seconds, args.connections))
    print(f"{args.connections} connections, {args.seconds:g} s x {args.rounds} rounds, medians:")
    print("| server | requests/s | server CPU µs/request | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"| {name} | {med['rps']:.0f} | {med['cpu_us']:.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
