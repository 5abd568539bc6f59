"""Load the recorded output of real instrumentations (tests/fixtures/captures) as views."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from promptwall_otel.mapping import EventView, LogView, SpanView

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "captures"


def _id(value: Any) -> int:
    return int(value, 16) if value else 0


def span_view(raw: Dict[str, Any]) -> SpanView:
    scope = raw.get("scope") or {}
    return SpanView(
        name=raw["name"],
        trace_id=_id(raw["trace_id"]),
        span_id=_id(raw["span_id"]),
        parent_span_id=_id(raw.get("parent_span_id")) or None,
        start_ns=raw["start_time_unix_nano"],
        end_ns=raw["end_time_unix_nano"],
        attributes=raw["attributes"],
        kind=raw["kind"],
        status_code=raw["status"]["code"],
        status_message=raw["status"].get("description"),
        events=[EventView(e["name"], e.get("time_unix_nano", 0), e.get("attributes") or {}) for e in raw["events"]],
        resource=raw.get("resource") or {},
        scope_name=scope.get("name", ""),
        scope_version=scope.get("version"),
    )


def log_view(raw: Dict[str, Any]) -> LogView:
    return LogView(
        trace_id=_id(raw["trace_id"]),
        span_id=_id(raw["span_id"]),
        event_name=raw.get("event_name"),
        body=raw.get("body"),
        attributes=raw.get("attributes") or {},
        time_ns=raw.get("timestamp_unix_nano") or raw.get("observed_timestamp_unix_nano") or 0,
    )


def load(name: str) -> Tuple[List[SpanView], List[LogView]]:
    raw = json.loads((CAPTURES / f"{name}.json").read_text())
    return [span_view(s) for s in raw["spans"]], [log_view(l) for l in raw["logs"]]
