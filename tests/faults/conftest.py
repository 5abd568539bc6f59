"""The fault suite's backend: stoppable and restartable on its port, its database file the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.faults.harness import Backend


@pytest.fixture()
def backend(tmp_path: Path) -> Iterator[Backend]:
    running = Backend(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()
