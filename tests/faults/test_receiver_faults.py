"""The receiver's delivery promise: what it answered 200 reaches the backend, or the spool and then the backend.

Real processes: ``promptwall-otel receive``, the local backend on a database
file (the ground truth), OTLP/HTTP bodies of distinct chat spans
(``otlp_load.py``) posted as a collector would, honouring 503.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import List, Optional, Set

import httpx

from tests.conftest import API_KEY
from tests.faults.otlp_load import SPANS_PER_BODY, body, calls_of, template
from tests.faults.harness import ROOT, Backend, wait_until
from tests.faults.test_delivery_suite import LONG

READY = "promptwall-otel receiver listening on http="


class ReceiverProcess:
    def __init__(self, forward_to: str, spool: Path, port: int = 0) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTWALL_", "OTEL_"))}
        environ["PYTHONPATH"] = str(ROOT)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "promptwall_otel", "receive", "--http", f"127.0.0.1:{port}", "--grpc", "off",
             "--forward-to", forward_to, "--spool-dir", str(spool), "--correlation-wait", "0.2"],
            env=environ, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        line = self.process.stdout.readline() if self.process.stdout else ""
        assert line.startswith(READY), line
        self.url = line[len(READY):].split()[0]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def spooled_records(spool: Path) -> int:
    """Records in finished spool files (a ``.….tmp`` file being written is not in the spool yet)."""
    return sum(int(p.name.rsplit("-n", 1)[1].split(".")[0]) for p in spool.glob("*/*.jsonl.gz*")
               if not p.name.startswith("."))  # fmt: skip


def post(client: httpx.Client, url: str, data: bytes) -> httpx.Response:
    return client.post(url + "/v1/traces", content=data, headers={
        "Content-Type": "application/x-protobuf", "X-API-Key": API_KEY})  # fmt: skip


def test_receiver_killed_with_a_spool_replays_it_at_restart_without_traffic(backend: Backend, tmp_path: Path) -> None:
    backend.stop()
    run = uuid.uuid4().hex[:10]
    spool = tmp_path / "receiver-spool"
    receiver = ReceiverProcess(backend.url, spool)
    shape = template(run)
    bodies = 15  # 3,000 spans
    try:
        with httpx.Client(timeout=30) as client:
            statuses = [post(client, receiver.url, body(shape, n)).status_code for n in range(bodies)]
        assert statuses == [200] * bodies
        assert wait_until(lambda: spooled_records(spool) >= bodies * SPANS_PER_BODY, 30), spooled_records(spool)
    finally:
        receiver.kill()
    backend.start()
    restarted = ReceiverProcess(backend.url, spool)
    try:
        expected_calls = bodies * SPANS_PER_BODY
        assert backend.wait_stored(run, expected_calls, 60), backend.stored(run)
    finally:
        restarted.stop()
    assert backend.stored(run) == (expected_calls, expected_calls, bodies * calls_of(0)[1])
    assert spooled_records(spool) == 0


class Load:
    """A collector's OTLP exporter in front of the receiver: a sending queue fed at a rate (or kept full),
    consumers that post and, on 503, wait ``Retry-After`` and retry the same batch. Remembers which bodies
    were answered 200."""

    def __init__(self, url: str, shape: bytes, consumers: int = 4, queue_size: int = 200) -> None:
        self.url, self.shape, self.consumers = url, shape, consumers
        self.acked: Set[int] = set()
        self.refused = 0  # 503 answers
        self.queue_full = 0  # bodies the "collector" itself dropped: never offered, never acknowledged
        self._queue: "queue.Queue[int]" = queue.Queue(queue_size)
        self._next = 0
        self._lock = threading.Lock()

    def _number(self) -> int:
        with self._lock:
            n, self._next = self._next, self._next + 1
        return n

    def run(self, seconds: float, bodies_per_s: Optional[float]) -> None:
        stop_at = time.monotonic() + seconds

        def produce() -> None:
            began, produced = time.monotonic(), 0
            while time.monotonic() < stop_at:
                delay = began + produced / bodies_per_s - time.monotonic()  # type: ignore[operator]
                if delay > 0:
                    time.sleep(delay)
                produced += 1
                try:
                    self._queue.put_nowait(self._number())
                except queue.Full:
                    self.queue_full += 1

        def consume() -> None:
            with httpx.Client(timeout=30) as client:
                while time.monotonic() < stop_at:
                    if bodies_per_s:
                        try:
                            n = self._queue.get(timeout=0.2)
                        except queue.Empty:
                            continue
                    else:
                        n = self._number()
                    while time.monotonic() < stop_at + 5:
                        response = post(client, self.url, body(self.shape, n))
                        if response.status_code == 200:
                            with self._lock:
                                self.acked.add(n)
                            break
                        assert response.status_code == 503 and "Retry-After" in response.headers, response.text
                        with self._lock:
                            self.refused += 1
                        time.sleep(float(response.headers["Retry-After"]))

        threads = [threading.Thread(target=consume) for _ in range(self.consumers)]
        if bodies_per_s:
            threads.append(threading.Thread(target=produce))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def forwarded_rate(backend: Backend, seconds: float) -> float:
    """Rows the backend stored per second over ``seconds``, from one count at each end of the window.

    Not a median of one-second samples: the backend commits a few hundred rows at once, so such samples sit
    on a grid of ~500 spans/s, and their median moved by a whole step (12-15 % of the figure) from run to
    run, which alone made 86 % and 100 % out of the same forwarding.
    """
    first, began = backend.count(), time.monotonic()
    time.sleep(seconds)
    return (backend.count() - first) / (time.monotonic() - began)


def saturated_rate(load: "Load", backend: Backend, warm_up_s: float = 4) -> float:
    """What the receiver forwards with callers always waiting (closed loop, retrying after 503), sampled 7 s
    (12 s in the long mode: the other load of a shared VM moves a short sample by 10-15 %) after ``warm_up_s``."""
    sample_s = 12 if LONG else 7
    saturate = threading.Thread(target=load.run, args=(warm_up_s + sample_s + 1, None))
    saturate.start()
    time.sleep(warm_up_s)
    rate = forwarded_rate(backend, sample_s)
    saturate.join()
    return rate


def test_receiver_at_twice_its_capacity_keeps_forwarding_and_loses_nothing_it_acknowledged(
    backend: Backend, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:10]
    receiver = ReceiverProcess(backend.url, tmp_path / "receiver-spool")
    load = Load(receiver.url, template(run))
    overload_s = 30
    try:
        # The first sample waits 15 s: the backend stores its first ~50,000 rows up to half again as fast per CPU
        # second as later ones (its database is small), which made the rate sampled at once a cold start's.
        before = saturated_rate(load, backend, warm_up_s=15)
        assert before > 1000, f"capacity {before:.0f} spans/s"
        double = threading.Thread(target=load.run, args=(overload_s, 2 * before / SPANS_PER_BODY))
        double.start()
        time.sleep(5)
        under_overload = forwarded_rate(backend, overload_s - 8)
        double.join()
        # Capacity sampled again after the overload, and the two averaged: the backend's own rate still drifts
        # down as its database grows, and so may the machine's other load; bracketing cancels a steady drift.
        after = saturated_rate(load, backend)
        capacity = (before + after) / 2
        acked = len(load.acked) * SPANS_PER_BODY
        assert backend.wait_stored(run, acked, 90, 0.5), (backend.stored(run), acked)
    finally:
        receiver.stop()
    print(f"receiver capacity {capacity:.0f} spans/s ({before:.0f} before, {after:.0f} after); at 2x for "
          f"{overload_s}s it forwarded {under_overload:.0f} spans/s ({under_overload / capacity:.0%}); "
          f"{load.refused} answers 503, {acked} spans acknowledged")
    # The promise is 90 %, checked in the long mode (make soak, a quiet machine). In make test, other suites may
    # share the two cores and change their load within the minute: there the bound only catches a collapse (36 runs
    # at load 3-7 measured 72-139 %, the 72 % at load 7).
    assert under_overload >= (0.9 if LONG else 0.6) * capacity
    assert load.refused > 0, "twice the capacity must be refused in part"
    rows, distinct, tokens = backend.stored(run)
    assert rows == distinct == acked and tokens == len(load.acked) * calls_of(0)[1]


def test_receiver_restarted_behind_a_real_collector_loses_nothing(backend: Backend, tmp_path: Path) -> None:
    """app → rotel → receiver (SIGTERMed mid-stream, back on its port a second later) → backend."""
    sys.path.insert(0, str(ROOT / "examples" / "collector"))
    from run_rotel import rotel_output, start_rotel, stop_rotel, wait_ready

    from tests.faults.harness import free_port
    from tests.faults.test_delivery_suite import App, expected

    run = uuid.uuid4().hex[:10]
    port, grpc_port, http_port = free_port(), free_port(), free_port()
    spool = tmp_path / "receiver-spool"
    receiver = ReceiverProcess(backend.url, spool, port)
    rotel = start_rotel(grpc_port, http_port, receiver.url, {"X-API-Key": API_KEY})
    try:
        wait_ready(rotel, grpc_port, http_port)
        app = App(backend.url, tmp_path / "app-spool", run, "--count", "5000", "--rate", "500",
                  "--otlp", f"http://127.0.0.1:{http_port}")  # fmt: skip
        time.sleep(4)
        receiver.stop()
        time.sleep(1)
        receiver = ReceiverProcess(backend.url, spool, port)
        assert app.wait()["emitted"] == 5000
        assert backend.wait_stored(run, 5000, 60, 0.5), (backend.stored(run), rotel_output(rotel))
    finally:
        stop_rotel(rotel)
        receiver.stop()
    assert backend.stored(run) == expected(range(5000))
