"""The spool: order, request-sized files, size cap, claims across processes, privacy, dead letters."""

from __future__ import annotations

import gzip
import json
import logging
import os
import stat
from pathlib import Path
from typing import List

import pytest

from promptwall_otel.transport import MemorySpool, Spool


def lines(*ids: str) -> List[bytes]:
    return [json.dumps({"request_id": rid}).encode() for rid in ids]


def many(count: int, prefix: str = "r") -> List[bytes]:
    return lines(*(f"{prefix}{i:05d}" for i in range(count)))


def test_batches_come_back_oldest_first(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 10_000)
    spool.put(lines("a", "b"))
    spool.put(lines("c"))
    first = spool.claim()
    assert first is not None and first.lines == lines("a", "b")
    spool.done(first)
    second = spool.claim()
    assert second is not None and second.lines == lines("c")
    spool.release(second)
    assert spool.pending() == 1
    again = spool.claim()
    assert again is not None and again.lines == lines("c")


def test_files_are_request_sized_whatever_was_put(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 10_000_000, max_batch_bytes=10_000)
    spool.put(many(1200))
    sizes = [count for _, _, count in spool.files()]
    assert sum(sizes) == 1200 and max(sizes) <= 500
    assert all(sum(len(line) + 1 for line in claim.lines) <= 10_000
               for claim in iter(spool.claim, None))  # fmt: skip


def test_files_are_compressed_and_private_from_the_start(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "spool" / "svc"
    spool = Spool(str(folder), 10_000_000)
    spool.put([json.dumps({"request_id": f"r{i}", "prompt": "the same system prompt " * 40}).encode() for i in range(100)])
    (path,) = folder.glob("*.jsonl.gz")
    raw = gzip.decompress(path.read_bytes())
    assert raw.count(b"\n") == 100 and path.stat().st_size * 5 < len(raw)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for created in (folder, folder.parent, folder.parent.parent):
        assert stat.S_IMODE(created.stat().st_mode) == 0o700, created


def test_an_open_folder_left_by_an_earlier_version_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    Spool(str(folder), 10_000).put(lines("a"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_legacy_plain_files_are_still_replayed(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001-0000001-000000.jsonl").write_bytes(b"\n".join(lines("old1", "old2")) + b"\n")
    spool = Spool(str(tmp_path), 10_000)
    assert spool.pending() == 2
    claim = spool.claim()
    assert claim is not None and claim.lines == lines("old1", "old2")


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
    dead = claimed.path.with_name(claimed.path.name.rsplit("-", 1)[0] + "-999999999")
    os.replace(claimed.path, dead)
    again = Spool(str(tmp_path), 10_000).claim()
    assert again is not None and again.lines == lines("a")


def test_size_cap_drops_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(str(tmp_path), 10_000)
    spool.put(lines("first"))
    one_file = spool.size()
    spool = Spool(str(tmp_path), 3 * one_file + one_file // 2)
    spool.put(lines("second"))
    spool.put(lines("third"))
    with caplog.at_level(logging.ERROR, "promptwall_otel"):
        assert spool.put(lines("fourth")) == (1, 1)
    assert spool.pending() == 3 and "dropped the 1 oldest" in caplog.text
    claim = spool.claim()
    assert claim is not None and claim.lines == lines("second")


def test_corrupt_file_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(str(tmp_path), 10_000)
    (tmp_path / "00000000000000000001-0000001-000000-n1.jsonl.gz").write_bytes(b"\x00garbage{\n")
    spool.put(lines("ok"))
    with caplog.at_level(logging.WARNING, "promptwall_otel"):
        claimed = Spool(str(tmp_path), 10_000).claim()
    assert claimed is not None and claimed.lines == lines("ok")
    assert list(tmp_path.glob("*.corrupt")) and "corrupt" in caplog.text


def test_no_partial_files_are_visible(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "deep" / "dir"), 10_000)
    spool.put(lines("a"))
    names = [p.name for p in (tmp_path / "deep" / "dir").iterdir()]
    assert len(names) == 1 and names[0].endswith("-n1.jsonl.gz") and not names[0].startswith(".")


def test_a_split_batch_keeps_its_place_in_the_order(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 10_000)
    spool.put(lines("a", "b", "c"))
    spool.put(lines("later"))
    claim = spool.claim()
    assert claim is not None
    spool.split(claim, [lines("a"), lines("b", "c")])
    order = [c.lines for c in iter(spool.claim, None)]
    assert order == [lines("a"), lines("b", "c"), lines("later")]


def test_claims_skip_what_is_excluded(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 10_000)
    spool.put(lines("suspect"))
    spool.put(lines("good"))
    first = spool.claim()
    assert first is not None
    spool.release(first)
    claim = spool.claim(exclude=frozenset({first.name}))
    assert claim is not None and claim.lines == lines("good")


def test_dead_letters_leave_the_queue_and_can_be_revived_or_purged(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 10_000)
    spool.put(lines("poison"))
    claim = spool.claim()
    assert claim is not None
    spool.dead_letter(claim)
    assert spool.pending() == 0 and spool.claim() is None
    (dead,) = spool.dead_letters()
    assert stat.S_IMODE(dead.parent.stat().st_mode) == 0o700
    assert spool.revive() == 1 and spool.pending() == 1 and not spool.dead_letters()
    again = spool.claim()
    assert again is not None
    spool.dead_letter(again)
    assert spool.purge(dead=True) == 1 and not spool.dead_letters()


def test_memory_spool_has_the_same_order_and_cap(caplog: pytest.LogCaptureFixture) -> None:
    spool = MemorySpool(max_bytes=3 * (len(lines("x")[0]) + 1))
    spool.put(lines("a", "b"))
    claim = spool.claim()
    assert claim is not None and claim.lines == lines("a", "b")
    spool.split(claim, [lines("a"), lines("b")])
    with caplog.at_level(logging.ERROR, "promptwall_otel"):
        assert spool.put(lines("c", "d")) == (2, 1)
    assert [c.lines for c in iter(spool.claim, None)] == [lines("b"), lines("c", "d")]
