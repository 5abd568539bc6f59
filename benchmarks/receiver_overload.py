"""The receiver at twice its capacity, as the fault test runs it, with what happens inside shown second by second.

    python benchmarks/receiver_overload.py [--rounds 1] [--verbose]

Run from a checkout's root, with ``PYTHONPATH`` set to it: the receiver, the
backend and the load are that checkout's (so an older tree extracted with
``git archive`` runs its own code under the same procedure and estimator).
The procedure is ``tests/faults/test_receiver_faults.py``'s: the local backend
on a database file, ``promptwall-otel receive`` in front of it, a
collector-like load of 200-span OTLP/HTTP bodies retrying on 503 after
``Retry-After``; the saturated rate (closed loop, 7 s window after 15 s of
warm-up), 30 s offered at twice that (22 s window), the saturated rate again
(after 4 s). Rates are rows the backend
stored per second over a window. Per phase it prints, averaged over the
seconds past each phase's first three:

- **sender busy**: the share of the time the receiver's sending thread spent
  in requests to the backend (the receiver runs with ``EventsClient.send``
  timed: a benchmark's instrument, not in the product);
- **seconds with an empty buffer** (``-``: a tree whose ``/healthz`` does not
  show it), the CPU of the receiver, the backend and
  the whole machine (cores), and the backend's rows per CPU second.

It also prints the peak RSS of the receiver, how many answers were 503, and
whether every acknowledged span was stored once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import httpx

sys.path.insert(0, os.getcwd())

from tests.faults.harness import Backend, wait_until  # noqa: E402
from tests.faults.otlp_load import SPANS_PER_BODY, template  # noqa: E402
from tests.faults.test_receiver_faults import READY, Load  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")

# Run in the receiver's process before the CLI: time the sender's requests, write the totals to a file.
_TIMED_RECEIVER = """
import json, os, runpy, sys, threading, time
from promptwall_otel.transport import http
sent = {"wall": 0.0, "requests": 0}
send = http.EventsClient.send
def timed(self, lines):
    began = time.monotonic()
    try:
        return send(self, lines)
    finally:
        sent["wall"] += time.monotonic() - began
        sent["requests"] += 1
http.EventsClient.send = timed
def dump(path=os.environ["SEND_TIMES"]):
    while True:
        with open(path + ".tmp", "w") as out:
            json.dump(sent, out)
        os.replace(path + ".tmp", path)
        time.sleep(0.25)
threading.Thread(target=dump, daemon=True).start()
sys.argv = ["promptwall_otel"] + sys.argv[1:]
runpy.run_module("promptwall_otel", run_name="__main__", alter_sys=True)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_cpu_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / _TICK


def rss_mib(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) // 1024


def stored_rate(backend: Backend, seconds: float) -> float:
    first, began = backend.count(), time.monotonic()
    time.sleep(seconds)
    return (backend.count() - first) / (time.monotonic() - began)


def one_round(verbose: bool) -> Dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="receiver-overload-"))
    backend = Backend(folder).start()
    send_times = folder / "send-times.json"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTWALL_", "OTEL_"))}
    environ.update(PYTHONPATH=os.getcwd(), SEND_TIMES=str(send_times))
    receiver = subprocess.Popen(
        [sys.executable, "-c", _TIMED_RECEIVER, "receive", "--http", "127.0.0.1:0", "--grpc", "off", "--forward-to",
         backend.url, "--spool-dir", str(folder / "spool"), "--correlation-wait", "0.2"],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert receiver.stdout is not None
    line = receiver.stdout.readline()
    assert line.startswith(READY), line
    url = line[len(READY):].split()[0]
    backend_pid = backend._running._process.pid  # type: ignore[union-attr]
    run = uuid.uuid4().hex[:10]
    load = Load(url, template(run))
    phase = ["before"]
    samples: List[Dict[str, Any]] = []
    stop = threading.Event()

    def sample() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    sent = json.loads(send_times.read_text())
                except (OSError, ValueError):
                    sent = {"wall": 0.0}
                health = client.get(url + "/healthz").json()
                samples.append({"t": time.monotonic(), "phase": phase[0], "rows": backend.count(),
                                "receiver": cpu_seconds(receiver.pid), "backend": cpu_seconds(backend_pid),
                                "machine": machine_cpu_seconds(), "send": sent["wall"], "rss": rss_mib(receiver.pid),
                                "buffer": health.get("forwarding_buffer_bytes")})  # fmt: skip
                if verbose and len(samples) > 1:
                    a, b = samples[-2], samples[-1]
                    print(f"{b['phase']:7s} stored {(b['rows'] - a['rows']) / (b['t'] - a['t']):6.0f}/s "
                          f"sender busy {(b['send'] - a['send']) / (b['t'] - a['t']):.2f} buffer {b['buffer']} "
                          f"rss {b['rss']} MiB", flush=True)  # fmt: skip
                time.sleep(1.0)

    def saturated(warm_up_s: float) -> float:
        closed_loop = threading.Thread(target=load.run, args=(warm_up_s + 8, None))
        closed_loop.start()
        time.sleep(warm_up_s)
        rate = stored_rate(backend, 7)
        closed_loop.join()
        return rate

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        before = saturated(15)
        phase[0] = "2x"
        overload = threading.Thread(target=load.run, args=(30, 2 * before / SPANS_PER_BODY))
        overload.start()
        time.sleep(5)
        under = stored_rate(backend, 22)
        overload.join()
        phase[0] = "after"
        after = saturated(4)
        phase[0] = "drain"
        acked = len(load.acked) * SPANS_PER_BODY
        delivered = wait_until(lambda: backend.stored(run)[0] >= acked, 90, 0.5)
        stored = backend.stored(run)
    finally:
        stop.set()
        sampler.join()
        receiver.terminate()
        receiver.wait(30)
        backend.stop()
    phases = {}
    for name in ("before", "2x", "after"):
        rows = [s for s in samples if s["phase"] == name][3:]
        pairs = list(zip(rows, rows[1:]))
        if not pairs:
            continue
        span = rows[-1]["t"] - rows[0]["t"]
        phases[name] = {
            "sender_busy": (rows[-1]["send"] - rows[0]["send"]) / span,
            "empty_buffer_s": sum(1 for s in rows if s["buffer"] == 0) if rows[0]["buffer"] is not None else "-",
            "seconds": len(rows),
            "receiver_cores": (rows[-1]["receiver"] - rows[0]["receiver"]) / span,
            "backend_cores": (rows[-1]["backend"] - rows[0]["backend"]) / span,
            "machine_cores": (rows[-1]["machine"] - rows[0]["machine"]) / span,
            "rows_per_backend_cpu_s": (rows[-1]["rows"] - rows[0]["rows"]) / max(1e-9, rows[-1]["backend"] - rows[0]["backend"]),
        }  # fmt: skip
    capacity = (before + after) / 2
    return {"before": before, "after": after, "under": under, "ratio": under / capacity, "phases": phases,
            "peak_rss_mib": max(s["rss"] for s in samples), "refused": load.refused, "acked": acked,
            "stored_once": delivered and stored[0] == stored[1] == acked}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="a line a second")
    args = parser.parse_args()
    ratios = []
    for n in range(args.rounds):
        result = one_round(args.verbose)
        ratios.append(result["ratio"])
        print(f"round {n + 1}: saturated {result['before']:.0f} before, {result['after']:.0f} after; at 2x "
              f"{result['under']:.0f} spans/s stored = {result['ratio']:.1%}; {result['refused']} answers 503; "
              f"peak RSS {result['peak_rss_mib']} MiB; {result['acked']} acknowledged, stored once: "
              f"{result['stored_once']}")  # fmt: skip
        for name, figures in result["phases"].items():
            print(f"  {name:6s} sender busy {figures['sender_busy']:.2f}, buffer empty {figures['empty_buffer_s']} of "
                  f"{figures['seconds']} s; cores: receiver {figures['receiver_cores']:.2f}, backend "
                  f"{figures['backend_cores']:.2f}, machine {figures['machine_cores']:.2f}; backend rows per CPU s "
                  f"{figures['rows_per_backend_cpu_s']:.0f}")  # fmt: skip
    if len(ratios) > 1:
        print(f"at 2x / saturated: median {statistics.median(ratios):.1%}, min {min(ratios):.1%}, max {max(ratios):.1%}")


if __name__ == "__main__":
    main()
