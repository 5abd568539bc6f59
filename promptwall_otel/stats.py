"""Self-telemetry: what happened to the records, readable from Python and as OTel metrics."""

from __future__ import annotations

import threading
from typing import Dict, Iterable, Optional

COUNTERS = (
    "exported",  # accepted by the backend
    "duplicates",  # skipped by the backend: already stored (idempotent request_id)
    "rejected",  # refused as invalid by the backend (207 items, 400 batches) or by local validation
    "spooled",  # records written to the on-disk spool
    "replayed",  # records sent again from the spool
    "dead_lettered",  # failed again and again while the backend took other records: moved to the dead letters
    "dropped",  # lost: app-side queue full, spool full, spool off at exit, or redact hook said so
)


class ExportStats:
    """Thread-safe counters; ``snapshot()`` for Python, ``observe_with()`` for OTel metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def add(self, name: str, amount: int = 1) -> None:
        if amount:
            with self._lock:
                self._values[name] += amount

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._values)

    def __repr__(self) -> str:
        return f"ExportStats({self.snapshot()})"


def register_metrics(stats: ExportStats, meter_provider: Optional[object] = None) -> None:
    """Expose the counters as observable OTel counters ``promptwall.records.<name>``.

    Observable instruments are read only when the meter provider collects, so
    this costs nothing on the export path; with the API's no-op provider it
    costs nothing at all.
    """
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Observation

    meter = (meter_provider or metrics.get_meter_provider()).get_meter("promptwall_otel")  # type: ignore[attr-defined]

    for name in COUNTERS:

        def callback(options: CallbackOptions, name: str = name) -> Iterable[Observation]:
            return [Observation(stats.snapshot()[name])]

        meter.create_observable_counter(f"promptwall.records.{name}", callbacks=[callback], unit="{record}")
