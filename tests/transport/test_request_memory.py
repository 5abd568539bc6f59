"""What a request costs in memory after it returns: nothing of its body (`transport/http.py`, `_SentOnce`)."""

from __future__ import annotations

import gc
import json
import tracemalloc
import uuid

from promptwall_otel.backend import LocalBackend
from promptwall_otel.transport.http import EventsClient
from tests.conftest import API_KEY

_BATCHES = 8
_RECORDS = 250  # of about 4 KB each: a 1 MB body, a spool file's worth of records like span_app.py's


def test_a_sent_body_is_not_kept_alive_by_the_client(backend: LocalBackend) -> None:
    """With the collector off, as it effectively is on a sending thread that allocates little, eight 1 MB
    requests leave less than one body's worth allocated: httpx's response cycle does not keep bodies."""
    client = EventsClient(backend.url + "/v1/events", API_KEY, compression="none")
    client.answers()  # the connection and httpx's lazily built state exist before the baseline
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(_BATCHES):
            lines = [json.dumps({"request_id": uuid.uuid4().hex, "prompt": "p" * 4000}).encode()
                     for _ in range(_RECORDS)]  # fmt: skip
            answer = client.send(lines)
            assert answer.status == 200 and answer.body and answer.body["accepted"] == _RECORDS, answer
        del lines
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
        gc.enable()
        client.close()
    assert held < 1_000_000, f"{held / 1e6:.1f} MB still allocated after {_BATCHES} requests of 1 MB"
