"""Records to request bodies: one encoded line per record, requests within the API's limits.

Pure CPU, no I/O, as OpenTelemetry keeps its encoders apart from its
transports. Invariants: every line is one JSON object in valid UTF-8;
:func:`batches` never puts more than ``max_events`` records in a request and
exceeds ``max_bytes`` only for a record that is larger alone (it then travels
alone rather than being lost).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence

from .._ratelimit import RateLimitedLogger
from ..record import MAX_BATCH, validate_event
from ..stats import ExportStats

logger = logging.getLogger("promptwall_otel")

DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024

try:  # 5-10x faster than json for our records (benchmarks/README.md); optional so exotic platforms still work
    import orjson

    def encode(record: Dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(record)
        except TypeError:  # lone surrogates or odd types a redact hook added: the stdlib path repairs them
            return _encode_stdlib(record)

except ImportError:  # pragma: no cover

    def encode(record: Dict[str, Any]) -> bytes:
        return _encode_stdlib(record)


def _encode_stdlib(record: Dict[str, Any]) -> bytes:
    # "replace" guarantees valid UTF-8 whatever a hook added.
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8", "replace")


def batches(lines: Sequence[bytes], max_events: int = MAX_BATCH, max_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> List[List[bytes]]:
    """Split encoded records into requests of at most ``max_events`` and about ``max_bytes`` each."""
    out: List[List[bytes]] = []
    current: List[bytes] = []
    size = 0
    for line in lines:
        if current and (len(current) >= max_events or size + len(line) + 1 > max_bytes):
            out.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        out.append(current)
    return out


def body_of(lines: Sequence[bytes]) -> bytes:
    """``{"events":[line,line,...]}`` built with one copy of the lines: a batch is megabytes, and each
    fresh buffer of that size costs page faults on top of the copy."""
    if not lines:
        return b'{"events":[]}'
    parts = [b'{"events":[', lines[0]]
    for line in lines[1:]:
        parts.append(b",")
        parts.append(line)
    parts.append(b"]}")
    return b"".join(parts)


class RecordEncoder:
    """Encodes records, validating them first when a redact hook could have broken them.

    Records from the mapping are valid by construction; an invalid one (a
    hook's doing) is counted as rejected and logged by ``request_id`` only.
    """

    def __init__(self, stats: ExportStats, validate: bool) -> None:
        self.stats = stats
        self.validate = validate
        self._log = RateLimitedLogger(logger)

    def __call__(self, record: Dict[str, Any]) -> Optional[bytes]:
        if self.validate:
            errors = validate_event(record)
            if errors:
                self.stats.add("rejected")
                self._log.log(logging.WARNING, "invalid", "record %s not sent, invalid: %s",
                              record.get("request_id"), "; ".join(errors))  # fmt: skip
                return None
        return encode(record)

    def many(self, records: Iterable[Dict[str, Any]]) -> List[bytes]:
        if not self.validate:
            return [encode(record) for record in records]
        return [line for line in map(self, records) if line is not None]
