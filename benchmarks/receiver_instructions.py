"""The receiver's work per span in CPU instructions, counted by valgrind: a figure that VM noise cannot move.

    python benchmarks/receiver_instructions.py [--small 10] [--large 30]
    python benchmarks/receiver_instructions.py --process [--large 30]

On a shared VM, timings of the same code vary by 30% from hour to hour
(benchmarks/README.md), which hides a change worth 5-10%. This counts
instructions instead (valgrind's callgrind, deterministic to ~0.1%): what
``receiver_cpu.py`` times, on one thread, for ``--small`` and then ``--large``
request bodies of 100 realistic chat spans each (``receiver_throughput.py``'s
bodies, gzip): gunzip as the servers do it, the views (the compiled wire
decoder where built), ``ReceiverCore.accept_spans`` and the mapping step
(``flush``: mapping, encoding, the hand-off to the sender). The sender
forwards to the benchmark sink on a thread of its own, not counted (callgrind
counts each thread apart); the difference between the two runs, divided by
the spans between them, leaves out start-up and imports.

It needs valgrind (Debian's ``valgrind``) and takes about a minute. For an
A/B, run it in two checkouts (each with its compiled modules built) and
compare. What it leaves out, as ``receiver_cpu.py`` does: the HTTP layer,
the other threads, cache and scheduling effects: CPU time per span beside
rotel (``receiver_throughput.py``) stays the measure of the targets.

``--process`` counts the whole thing instead: a real ``promptwall-otel
receive`` under callgrind, every thread, while ``--large`` bodies are posted
to it over HTTP one after another (after 5 bodies of warm-up, counters zeroed
in between), until the sink has them all; it prints instructions per span by
thread (the event loop with HTTP parsing and gunzip, the request threads with
views and intake, the flusher, the sender). The sender's share is larger
than in a timed run: slowed down ~50 times, the flusher hands it small
batches, and each request to the sink costs the same whatever its size.
"""

from __future__ import annotations

import argparse
import glob
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(bodies_file: str, count: int) -> None:
    """Under valgrind: the receiver's steps for the first ``count`` bodies, on this (the main) thread."""
    from benchmarks.sinks import Sinks
    from promptwall_otel.receiver.core import ReceiverCore
    from promptwall_otel.receiver.decode import protobuf_span_views
    from promptwall_otel.serving import decompress
    from promptwall_otel.webserver import tune_interpreter_for_serving

    with open(bodies_file, "rb") as handle:
        bodies = pickle.load(handle)[:count]
    sinks = Sinks()
    tune_interpreter_for_serving()
    try:
        with tempfile.TemporaryDirectory() as spool:
            core = ReceiverCore(sinks.events_url, "pk_bench", spool_root=spool, max_buffer_bytes=1 << 30)
            core._closed.set()  # the mapping step runs on this thread, counted: the background flusher stops
            core._wake.set()
            core._flusher.join()
            for body in bodies:
                views, _ = protobuf_span_views(decompress(body, "gzip", 1 << 30))
                core.accept_spans(views, "pk_bench")
                core.flush(force=False)
            assert core.snapshot()["spans_waiting"] == 0, "spans were left waiting: not counted"
            core.close(30)
    finally:
        sinks.stop()


def counted(bodies_file: str, count: int, folder: str) -> int:
    """Instructions of the main thread for ``count`` bodies."""
    out = os.path.join(folder, f"callgrind.{count}")
    subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
                    sys.executable, __file__, "--child", bodies_file, str(count)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    (main_thread,) = glob.glob(out + "-01")
    with open(main_thread) as handle:
        totals = re.search(r"^(?:summary|totals): (\d+)", handle.read(), re.M)
    assert totals, "no instruction count in callgrind's output"
    return int(totals.group(1))


def whole_process(bodies: List[bytes], folder: str) -> None:
    """Every thread of a running receiver under callgrind: instructions per span, by thread."""
    import httpx

    from benchmarks.receiver_throughput import KEY
    from benchmarks.sinks import Sinks

    out = os.path.join(folder, "callgrind.process")
    sinks = Sinks()
    receiver = subprocess.Popen(["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
                                 sys.executable, "-m", "promptwall_otel", "receive", "--http", "127.0.0.1:0", "--grpc",
                                 "off", "--forward-to", sinks.events_url, "--spool-dir", os.path.join(folder, "spool")],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    try:
        assert receiver.stdout is not None
        base = receiver.stdout.readline().split("http=", 1)[1].split()[0]
        warm, counted_bodies = bodies[:5], bodies[5:]
        with httpx.Client(timeout=300) as client:

            def post_all(some: List[bytes], expected: int) -> None:
                for body in some:
                    answer = client.post(base + "/v1/traces", content=body, headers={
                        "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", "X-API-Key": KEY})  # fmt: skip
                    assert answer.status_code == 200, answer.status_code
                while int(client.get(base + "/healthz").json().get("records_exported", 0)) < expected:
                    time.sleep(0.2)

            post_all(warm, len(warm) * 100)
            subprocess.run(["callgrind_control", "--zero", str(receiver.pid)], check=True, capture_output=True)
            post_all(counted_bodies, len(bodies) * 100)
            subprocess.run(["callgrind_control", "--dump", str(receiver.pid)], check=True, capture_output=True)
    finally:
        receiver.terminate()
        receiver.wait(60)
        sinks.stop()
    spans = len(counted_bodies) * 100
    roles = (("flush_loop", "flusher (mapping, encoding)"), ("span_views", "request threads (views, intake)"),
             ("task_step", "event loop (HTTP, gunzip)"))  # fmt: skip
    total = 0
    for name in sorted(glob.glob(out + ".1-*")):  # the dump after zeroing; one file per thread
        with open(name) as handle:
            text = handle.read()
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        count = int(found.group(1)) if found else 0
        if count < spans * 1000:
            continue  # a thread that did next to nothing meanwhile
        total += count
        role = next((label for marker, label in roles if marker in text), "other (the sender)")
        print(f"  {role:34s} {count / spans:9,.0f}")
    print(f"instructions per span, whole receiver process over HTTP: {total / spans:,.0f} ({spans} spans)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10, help="request bodies of 100 spans in the first run")
    parser.add_argument("--large", type=int, default=30, help="and in the second")
    parser.add_argument("--process", action="store_true", help="count every thread of a receiver process over HTTP")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    from benchmarks.receiver_throughput import requests_bodies

    if args.process:
        with tempfile.TemporaryDirectory() as folder:
            whole_process(requests_bodies(args.large + 5, 100, f"ins{int(time.time())}"), folder)
        return
    with tempfile.TemporaryDirectory() as folder:
        bodies_file = os.path.join(folder, "bodies.pickle")
        with open(bodies_file, "wb") as handle:
            pickle.dump(requests_bodies(args.large, 100, f"ins{int(time.time())}"), handle)
        small, large = (counted(bodies_file, n, folder) for n in (args.small, args.large))
    spans = (args.large - args.small) * 100
    print(f"instructions per span, main thread (gunzip, views, intake, mapping step): {(large - small) / spans:,.0f}"
          f"  ({args.small} and {args.large} bodies of 100 spans: {small:,} and {large:,})")  # fmt: skip


if __name__ == "__main__":
    main()
