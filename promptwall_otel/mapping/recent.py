"""A bounded map of recent entries that the garbage collector never walks.

The ledger and the receiver remember tens of thousands of recent ids (calls
handed out, span lineage). Kept in an ``OrderedDict`` of tuples, they are
~100,000 references that every full collection follows, one cache miss each
(about 10 ms a collection at the receiver's rates, paid by whichever thread
triggers it), and every insertion adds a tuple that survives into the oldest
generation, which makes full collections come sooner.

Invariants:

- Two plain dicts: the newer takes insertions until it holds ``keep``
  entries, then becomes the older, and the older is dropped. O(1) per
  operation, at most ``2 * keep`` entries, and at least the last ``keep``
  insertions are remembered.
- Keys and values must be atomic (``str``, ``int``, ``bytes``, ``None``;
  anything else goes in packed with :func:`pack`): CPython never tracks a
  dict that holds only those, so neither the size nor the churn of the map
  costs a collection anything.
- Not thread-safe; its users hold their own lock.
"""

from __future__ import annotations

import marshal
from typing import Any, Dict, Generic, Optional, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


def pack(value: Any) -> bytes:
    """``value`` (tuples of atomic values) as one compact, atomic ``bytes``; :func:`unpack` reverses it.

    ``marshal.dumps`` writes into a buffer of about 1 KB and shrinks it in
    place, so what it returns stays a 144-byte C heap chunk for a ledger
    entry of 90 bytes, outside Python's small-object allocator; tens of
    thousands of those, interleaved with the sending thread's records of a
    few KB, fragment the heap the records use (an app at 1,000 spans/s during
    an outage: RSS plateau 78 MB, 70 MB packed so). Copied, the value takes a
    small-object block of its own size.
    """
    return bytes(memoryview(marshal.dumps(value)))


unpack = marshal.loads


class RecentMap(Generic[K, V]):
    __slots__ = ("_newer", "_older", "_keep")

    def __init__(self, keep: int) -> None:
        self._newer: Dict[K, V] = {}
        self._older: Dict[K, V] = {}
        self._keep = keep

    def __setitem__(self, key: K, value: V) -> None:
        newer = self._newer
        newer[key] = value
        if len(newer) >= self._keep:
            self._older, self._newer = newer, {}

    def get(self, key: K, default: Optional[V] = None) -> Optional[V]:
        value = self._newer.get(key, _MISSING)  # type: ignore[arg-type]
        if value is _MISSING:
            return self._older.get(key, default)
        return value  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        return key in self._newer or key in self._older

    def __len__(self) -> int:
        return len(self._newer) + len(self._older)
