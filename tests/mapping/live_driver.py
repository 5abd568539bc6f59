"""Run one real instrumentation of the real openai client and print the records it maps to.

Run in a fresh process per (producer, mode): instrumentations read their
environment at import and instrument time. The scenarios and instrumentors are
the ones that recorded ``tests/fixtures/captures``.

    python tests/mapping/live_driver.py PRODUCER MODE BASE_URL
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fixtures" / "captures"))

import capture  # noqa: E402  (tests/fixtures/captures/capture.py)


def main(producer: str, mode: str, base_url: str) -> None:
    os.environ.update(capture.PRODUCERS[producer][mode])

    import openai
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from promptwall_otel.config import mapping_options
    from promptwall_otel.mapping import from_readable_span, from_sdk_log
    from promptwall_otel.mapping.ledger import TraceLedger

    resource = Resource.create({"service.name": "live-test", "service.version": "1.2.3"})
    spans = InMemorySpanExporter()
    logs = InMemoryLogRecordExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    capture.instrument(producer, mode, tracer_provider, logger_provider)

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-fake", max_retries=0)
    options = mapping_options()
    ledger = TraceLedger()
    result = {}
    for scenario in capture.SCENARIOS:
        spans.clear()
        logs.clear()
        outcome = capture.run_scenario(client, scenario)
        views = [from_readable_span(span) for span in spans.get_finished_spans()]
        content = [view for view in (from_sdk_log(log) for log in logs.get_finished_logs()) if view is not None]
        records = ledger.map_batch(views, options, logs_for=lambda v: [c for c in content if c.span_id == v.span_id])
        result[scenario] = {"outcome": capture._jsonable(outcome), "spans": len(views), "records": records}
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
