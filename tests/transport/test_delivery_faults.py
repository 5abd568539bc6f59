"""The exporter against a fault-injecting proxy in front of the real backend.

Every valid record arrives exactly once; rejected ones are counted; the
application thread never waits on the network; the key never shows up.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from promptwall_otel import PromptWallSpanExporter, PromptWallSpanProcessor
from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY, stored_events
from tests.faults.fault_server import FaultServer, partial_reject, reset, slow, status


@pytest.fixture()
def backend() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[API_KEY]) as running:
        yield running


@pytest.fixture()
def proxy(backend: LocalBackend) -> Iterator[FaultServer]:
    with FaultServer(backend.url) as running:
        yield running


def chat_spans(count: int, model: str = "gpt-4o-mini") -> List[ReadableSpan]:
    """Real SDK spans of ``count`` distinct chat calls."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    run = uuid.uuid4().hex[:10]
    for i in range(count):
        with tracer.start_as_current_span(f"chat {model}") as span:
            span.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": model,
                "gen_ai.response.id": f"chatcmpl-{run}-{i:06d}", "gen_ai.usage.input_tokens": 10 + i,
                "gen_ai.usage.output_tokens": 5, "gen_ai.input.messages": '[{"role":"user","parts":'
                '[{"type":"text","content":"card 4111 1111 1111 1111"}]}]',
            })  # fmt: skip
    return list(memory.get_finished_spans())


def exporter(url: str, tmp_path: Path, **options: Any) -> PromptWallSpanExporter:
    options.setdefault("api_key", API_KEY)
    options.setdefault("spool_dir", str(tmp_path / "spool"))
    return PromptWallSpanExporter(base_url=url, **options)


def ids_of(events: List[Dict[str, Any]]) -> List[str]:
    return sorted(event["request_id"] for event in events)


def wait_until(condition: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_503_storm_then_recovery_without_new_traffic(backend: LocalBackend, proxy: FaultServer, tmp_path: Path) -> None:
    proxy.script(status(503), status(502), status(504), status(500))
    target = exporter(proxy.url, tmp_path)
    assert target.export(chat_spans(20)).name == "SUCCESS"
    assert wait_until(lambda: target.stats_snapshot()["exported"] == 20), "the worker must retry by itself"
    stats = target.stats_snapshot()
    assert stats["exported"] == 20 and stats["replayed"] == 20 and stats["spooled"] == 20
    assert [r.outcome for r in proxy.requests][:4] == [503, 502, 504, 500]
    assert ids_of(stored_events(backend.url)) == sorted(set(ids_of(stored_events(backend.url))))


def test_429_retry_after_is_honoured(backend: LocalBackend, proxy: FaultServer, tmp_path: Path) -> None:
    proxy.script(status(429, retry_after="1"))
    exporter(proxy.url, tmp_path).export(chat_spans(3))
    assert wait_until(lambda: len(stored_events(backend.url)) == 3)
    first, second = proxy.requests[:2]
    assert (first.outcome, second.outcome) == (429, 200)
    assert second.at - first.at >= 0.95


def test_timeout_after_commit_is_a_duplicate_not_a_double(backend: LocalBackend, proxy: FaultServer,
                                                         tmp_path: Path) -> None:  # fmt: skip
    proxy.script(slow(1.5))
    target = exporter(proxy.url, tmp_path, timeout=0.5)
    target.export(chat_spans(7))
    assert wait_until(lambda: target.stats_snapshot()["duplicates"] == 7)
    assert len(stored_events(backend.url)) == 7
    assert target.stats_snapshot()["exported"] == 0


def test_connection_reset_is_retried(backend: LocalBackend, proxy: FaultServer, tmp_path: Path) -> None:
    proxy.script(reset(), reset())
    target = exporter(proxy.url, tmp_path)
    target.export(chat_spans(5))
    assert wait_until(lambda: target.stats_snapshot()["exported"] == 5)
    assert len(stored_events(backend.url)) == 5
    assert [r.outcome for r in proxy.requests][:2] == ["reset", "reset"]
    assert target.stats_snapshot()["exported"] == 5


def test_401_spools_loudly_without_the_key_then_a_flush_replays(backend: LocalBackend, proxy: FaultServer,
                                                               tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proxy.always(status(401))
    target = exporter(proxy.url, tmp_path)
    with caplog.at_level(logging.DEBUG):
        target.export(chat_spans(4))
        assert wait_until(lambda: target.stats_snapshot()["spooled"] == 4)
        time.sleep(0.5)
    assert len(proxy.requests) == 1, "an auth failure is not retried at once"
    assert stored_events(backend.url) == []
    assert "PROMPTWALL_API_KEY" in caplog.text and API_KEY not in caplog.text and API_KEY not in repr(target)
    proxy.always(None)
    assert target.force_flush(10_000), "a flush tries the spool even during the pause after a refusal"
    assert len(stored_events(backend.url)) == 4 and target.stats_snapshot()["replayed"] == 4


def test_207_rejects_are_counted_and_logged_without_content(backend: LocalBackend, proxy: FaultServer, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    proxy.script(partial_reject([1, 3]))
    target = exporter(proxy.url, tmp_path)
    with caplog.at_level(logging.WARNING, "promptwall_otel"):
        target.export(chat_spans(6))
        assert target.force_flush(10_000)
    stats = target.stats_snapshot()
    assert stats["rejected"] == 2 and stats["exported"] == 4 and len(proxy.requests) == 1
    assert len(stored_events(backend.url)) == 4
    assert "[1]" in caplog.text and "[3]" in caplog.text and "4111" not in caplog.text


def test_400_with_reasons_is_counted_not_retried(backend: LocalBackend, proxy: FaultServer, tmp_path: Path) -> None:
    reasons = [{"index": i, "request_id": f"r{i}", "error": "invalid"} for i in range(3)]
    proxy.script(status(400, body={"ok": False, "accepted": 0, "skipped": 0, "rejected": reasons, "total": 3}))
    target = exporter(proxy.url, tmp_path)
    target.export(chat_spans(3))
    assert target.force_flush(10_000)
    assert len(proxy.requests) == 1 and target.stats_snapshot()["rejected"] == 3
    assert target.stats_snapshot()["spooled"] == 0


def test_400_for_the_batch_as_a_whole_is_split_until_each_record_is_judged(backend: LocalBackend, proxy: FaultServer,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    proxy.always(status(400, body={"ok": False, "error": "too many events"}))
    target = exporter(proxy.url, tmp_path)
    target.export(chat_spans(3))
    assert target.force_flush(10_000)
    assert [r.events for r in proxy.requests] == [3, 1, 2, 1, 1]
    assert target.stats_snapshot()["rejected"] == 3 and target.stats_snapshot()["spooled"] == 0


def test_413_splits_the_batch(backend: LocalBackend, proxy: FaultServer, tmp_path: Path) -> None:
    proxy.script(status(413))
    target = exporter(proxy.url, tmp_path)
    target.export(chat_spans(10))
    assert target.force_flush(10_000)
    assert [r.events for r in proxy.requests] == [10, 5, 5]
    assert len(stored_events(backend.url)) == 10


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_compression_setting(backend: LocalBackend, tmp_path: Path, compression: str) -> None:
    target = exporter(backend.url, tmp_path, compression=compression)
    assert target.export(chat_spans(3)).name == "SUCCESS"
    assert target.force_flush(10_000)
    assert target.stats_snapshot()["exported"] == 3 and len(stored_events(backend.url)) == 3


def test_requests_respect_the_byte_budget(backend: LocalBackend, proxy: FaultServer, tmp_path: Path) -> None:
    target = exporter(proxy.url, tmp_path, max_batch_bytes=4096)
    target.export(chat_spans(12))
    assert target.force_flush(10_000)
    sizes = [r.events for r in proxy.requests]
    assert sum(sizes) == 12 and len(sizes) > 1
    assert len(stored_events(backend.url)) == 12


def test_missing_key_keeps_records_until_a_key_is_set(backend: LocalBackend, proxy: FaultServer, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("PROMPTWALL_API_KEY", raising=False)
    spool_dir = str(tmp_path / "spool")
    with caplog.at_level(logging.ERROR, "promptwall_otel"):
        target = PromptWallSpanExporter(base_url=proxy.url, spool_dir=spool_dir)
        assert caplog.text == "", "no error at construction"
        target.export(chat_spans(2))
        assert wait_until(lambda: target.stats_snapshot()["spooled"] == 2)
    assert "PROMPTWALL_API_KEY" in caplog.text and proxy.requests == []
    assert not target.force_flush(1000), "nothing can be delivered without a key"
    target.shutdown()
    keyed = PromptWallSpanExporter(api_key=API_KEY, base_url=proxy.url, spool_dir=spool_dir)
    assert keyed.force_flush(10_000)
    assert len(stored_events(backend.url)) == 2 and keyed.stats_snapshot()["replayed"] == 2


def test_outage_never_blocks_the_application_thread(backend: LocalBackend, proxy: FaultServer, tmp_path: Path) -> None:
    proxy.always(slow(2.0, then_forward=False))
    processor = PromptWallSpanProcessor(exporter(proxy.url, tmp_path, timeout=1.0), schedule_delay_millis=50,
                                        max_export_batch_size=5)  # fmt: skip
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    worst = 0.0
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        start = time.perf_counter()
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={"gen_ai.operation.name": "chat"}):
            pass
        worst = max(worst, time.perf_counter() - start)
        time.sleep(0.005)
    assert worst < 0.25, f"a span took {worst:.3f}s on the app thread during the outage"
    started = time.monotonic()
    provider.shutdown()
    assert time.monotonic() - started < 8
    assert processor.stats()["spooled"] > 0


EXIT_APP = """
import time, promptwall_otel
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
provider = TracerProvider()
trace.set_tracer_provider(provider)
promptwall_otel.configure(timeout=30, schedule_delay_millis=50)
tracer = trace.get_tracer("app")
for i in range(5):
    with tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                                          "gen_ai.response.id": f"resp-exit-test-{i:06d}"}):
        pass
time.sleep(0.5)  # the worker is now stuck in a request that will not answer
"""


def test_process_exits_within_the_shutdown_bound_and_keeps_the_batch(backend: LocalBackend, proxy: FaultServer,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    proxy.always(slow(60, then_forward=False))
    env = {"PROMPTWALL_API_KEY": API_KEY, "PROMPTWALL_BASE_URL": proxy.url, "PROMPTWALL_SPOOL_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin", **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {})}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", EXIT_APP], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 15, f"exit took {elapsed:.1f}s"
    proxy.always(None)
    assert exporter(proxy.url, tmp_path, spool_dir=str(tmp_path)).force_flush(10_000)
    assert len(stored_events(backend.url)) == 5


def chat_burst(tracer: Any, count: int, run: str) -> None:
    for i in range(count):
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.id": f"chatcmpl-{run}-{i:06d}", "gen_ai.usage.input_tokens": 3,
            "gen_ai.usage.output_tokens": 2,
        }):  # fmt: skip
            pass


def test_next_batch_is_mapped_while_a_request_is_in_flight(backend: LocalBackend, proxy: FaultServer,
                                                           tmp_path: Path) -> None:  # fmt: skip
    proxy.script(slow(1.5))
    processor = PromptWallSpanProcessor(exporter(proxy.url, tmp_path), schedule_delay_millis=20, max_export_batch_size=5)
    mapped_at: List[float] = []
    encode_spans = processor.exporter.encode_spans

    def observed_encode(spans: Any) -> List[List[bytes]]:  # observation only: the real mapping and sending run
        encoded = encode_spans(spans)
        mapped_at.append(time.monotonic())
        return encoded

    processor.exporter.encode_spans = observed_encode  # type: ignore[method-assign]
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    run = uuid.uuid4().hex[:8]
    chat_burst(tracer, 5, run + "a")
    assert proxy.wait_for_requests(1, 5)
    first_request_at = time.monotonic()
    chat_burst(tracer, 5, run + "b")
    assert wait_until(lambda: len(mapped_at) == 2, 5)
    assert mapped_at[1] < first_request_at + 1.0, "batch 2 was mapped only after batch 1's answer"
    assert processor.force_flush(10_000)
    assert len([e for e in stored_events(backend.url) if run in e["metadata"]["gen_ai"]["response_id"]]) == 10
    provider.shutdown()


def test_shutdown_spools_the_request_in_flight_and_the_batch_behind_it(backend: LocalBackend, proxy: FaultServer,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    proxy.always(slow(30, then_forward=False))
    processor = PromptWallSpanProcessor(exporter(proxy.url, tmp_path, timeout=20), schedule_delay_millis=20,
                                        max_export_batch_size=5, export_timeout_millis=1000)  # fmt: skip
    provider = TracerProvider()
    provider.add_span_processor(processor)
    run = uuid.uuid4().hex[:8]
    chat_burst(provider.get_tracer("app"), 15, run)
    assert proxy.wait_for_requests(1, 5) or wait_until(lambda: processor.exporter.worker._busy, 5)
    started = time.monotonic()
    provider.shutdown()
    assert time.monotonic() - started < 8
    proxy.always(None)
    assert exporter(proxy.url, tmp_path).force_flush(10_000)
    assert len([e for e in stored_events(backend.url) if run in e["metadata"]["gen_ai"]["response_id"]]) == 15


def test_a_url_without_a_scheme_is_said_at_once_and_nothing_is_lost(backend: LocalBackend, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    host = backend.url.split("://", 1)[1]
    with caplog.at_level(logging.ERROR, "promptwall_otel"):
        target = exporter(host, tmp_path)
        target.export(chat_spans(3))
        assert not target.force_flush(5_000)
    assert "has no http:// or https://" in caplog.text and "PROMPTWALL_BASE_URL" in caplog.text
    assert target.stats_snapshot()["spooled"] == 3 and target.stats_snapshot()["dropped"] == 0
    target.shutdown()
    fixed = exporter(backend.url, tmp_path)
    assert fixed.force_flush(10_000) and fixed.stats_snapshot()["replayed"] == 3


def test_a_span_the_mapping_cannot_handle_costs_its_own_record_only(backend: LocalBackend, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapper bug on one producer's input (injected here) must not lose the rest of the batch."""
    from promptwall_otel.mapping import ledger

    real = ledger.build_event

    def fails_on_one(view: Any, *args: Any, **kwargs: Any) -> Any:
        if str(view.attributes.get("gen_ai.response.id", "")).endswith("-000002"):
            raise TypeError("a shape the mapping did not foresee")
        return real(view, *args, **kwargs)

    monkeypatch.setattr(ledger, "build_event", fails_on_one)
    target = exporter(backend.url, tmp_path)
    spans = chat_spans(5)
    encoded = target.encode_spans(spans)
    assert [len(lines) for lines in encoded] == [4] and target.stats_snapshot()["dropped"] == 1
    target.offer(encoded)
    assert target.force_flush(10_000)
    stored = sorted(e["metadata"]["gen_ai"]["response_id"][-6:] for e in stored_events(backend.url))
    assert stored == ["000000", "000001", "000003", "000004"]


def test_compression_defaults_to_none_on_this_machine_and_gzip_elsewhere(tmp_path: Path) -> None:
    for endpoint, expected in (("http://127.0.0.1:9", "none"), ("http://localhost:9", "none"), ("http://[::1]:9", "none"),
                               ("https://promptwall.example", "gzip"), ("http://10.0.0.7:8787", "gzip")):  # fmt: skip
        target = exporter(endpoint, tmp_path / expected / endpoint.split("//")[1].replace(":", "_").strip("[]"))
        try:
            assert target.worker is not None and target.worker.client.compression == expected, endpoint
        finally:
            target.shutdown()
    forced = exporter("http://127.0.0.1:9", tmp_path / "forced", compression="gzip")
    try:
        assert forced.worker is not None and forced.worker.client.compression == "gzip"
    finally:
        forced.shutdown()
