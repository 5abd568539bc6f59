"""The on-disk spool: order, size cap, claims across processes, corrupt files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from promptwall_otel.transport import Spool


def lines(*ids: str) -> list:
    return [json.dumps({"request_id": rid}).encode() for rid in ids]


def test_batches_come_back_oldest_first(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 10_000)
    spool.put(lines("a", "b"))
    spool.put(lines("c"))
    first = spool.claim()
    assert first is not None and first[1] == lines("a", "b")
    spool.done(first[0])
    second = spool.claim()
    assert second is not None and second[1] == lines("c")
    spool.release(second[0])
    assert spool.pending() == 1
    again = spool.claim()
    assert again is not None and again[1] == lines("c")


def test_a_claimed_file_is_invisible_to_other_claimers(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 10_000)
    spool.put(lines("a"))
    assert spool.claim() is not None
    assert Spool(str(tmp_path), 10_000).claim() is None


def test_claims_of_dead_processes_are_released(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 10_000)
    spool.put(lines("a"))
    claimed = spool.claim()
    assert claimed is not None
    dead = claimed[0].with_name(claimed[0].name.rsplit("-", 1)[0] + "-999999999")
    os.replace(claimed[0], dead)
    again = spool.claim()
    assert again is not None and again[1] == lines("a")


def test_size_cap_drops_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    one = lines("x" * 50)
    spool = Spool(str(tmp_path), 3 * (len(one[0]) + 1))
    for _ in range(3):
        assert spool.put(one) == (1, 0)
    with caplog.at_level(logging.ERROR, "promptwall_otel"):
        assert spool.put(one) == (1, 1)
    assert spool.pending() == 3 and "dropped the 1 oldest" in caplog.text


def test_corrupt_file_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(str(tmp_path), 10_000)
    (tmp_path / "00000000000000000001-0000001-000000.jsonl").write_bytes(b"\x00garbage{\n")
    spool.put(lines("ok"))
    with caplog.at_level(logging.WARNING, "promptwall_otel"):
        claimed = spool.claim()
    assert claimed is not None and claimed[1] == lines("ok")
    assert list(tmp_path.glob("*.corrupt")) and "corrupt" in caplog.text


def test_no_partial_files_are_visible(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "deep" / "dir"), 10_000)
    spool.put(lines("a"))
    names = [p.name for p in (tmp_path / "deep" / "dir").iterdir()]
    assert len(names) == 1 and names[0].endswith(".jsonl") and not names[0].startswith(".")
