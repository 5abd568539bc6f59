"""RecentMap (mapping/recent.py): bounded, remembers the recent, is never walked by the garbage collector, and
what it holds packed takes no C heap."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

from promptwall_otel.mapping import MappingOptions
from promptwall_otel.mapping.ledger import TraceLedger
from promptwall_otel.mapping.recent import RecentMap, pack, unpack
from tests.mapping.captures import CAPTURES, load


def test_remembers_at_least_the_last_keep_and_holds_at_most_twice_that() -> None:
    recent: RecentMap[int, int] = RecentMap(100)
    for n in range(1, 1001):
        recent[n] = n * 2
        assert len(recent) <= 200
        assert all(recent.get(m) == m * 2 for m in range(max(1, n - 99), n + 1))
    assert 0 not in recent and recent.get(1) is None and recent.get(1, -1) == -1
    recent[1000] = 7  # a key set again takes its new value
    assert recent.get(1000) == 7 and 1000 in recent


def test_atomic_entries_are_never_tracked_by_the_garbage_collector() -> None:
    recent: RecentMap[object, object] = RecentMap(10)
    for n in range(25):
        recent[n] = b"packed" if n % 2 else n
        recent[f"id-{n}"] = None
    assert not gc.is_tracked(recent._newer) and not gc.is_tracked(recent._older)
    recent["tuple"] = (1, [2])  # why values must be atomic: this makes its dict a container to walk
    assert gc.is_tracked(recent._newer)


def test_the_ledgers_memory_of_calls_sent_stays_out_of_collections() -> None:
    ledger = TraceLedger()
    records = []
    for path in sorted(CAPTURES.glob("*.json")):
        views, logs = load(path.stem)
        records += ledger.map_batch(views, MappingOptions(),
                                    logs_for=lambda v: [log for log in logs if log.span_id == v.span_id])
    assert len(records) >= 50
    assert len(ledger._calls_sent) >= 50 and len(ledger._sent) >= 1
    for recent in (ledger._sent, ledger._calls_sent):
        assert not gc.is_tracked(recent._newer) and not gc.is_tracked(recent._older)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def test_packed_values_round_trip_and_take_no_c_heap() -> None:
    """What the ledger stores per call sent lives in Python's small-object allocator: glibc's heap (where
    marshal.dumps's own result stays, 144 bytes per value) is shared with the records the sending thread
    holds, and small chunks left among theirs kept an app's RSS 8 MB higher during an outage."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    call = ((True, True, 12), ("gen-" + "a" * 40, "conv-a1b2c3d4e5-1", None, "fault-app"))
    assert unpack(pack(call)) == call and isinstance(pack(call), bytes)
    held = []
    before = libc.mallinfo2().uordblks
    for n in range(20_000):
        held.append(pack((call[0], (f"gen-{n:040d}", *call[1][1:]))))
    per_value = (libc.mallinfo2().uordblks - before) / len(held)
    assert per_value < 40, f"{per_value:.0f} bytes of C heap per packed value"  # the list's 8 and its growth
