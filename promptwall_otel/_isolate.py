"""Mapping a batch so that one input the mapping did not foresee costs only its own record.

``run(batch)``; if it raises, ``run`` each trace's items alone; items of a
trace that still fails are run one by one, and those that fail alone go to
``dropped``. The exporter and the receiver use it around their mapping.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Sequence, TypeVar

logger = logging.getLogger("promptwall_otel")

T = TypeVar("T")


def map_isolated(items: Sequence[T], trace_of: Callable[[T], int], run: Callable[[Sequence[T]], None],
                 dropped: Callable[[T], None]) -> None:  # fmt: skip
    try:
        run(items)
        return
    except Exception:
        logger.exception("PromptWall: mapping a batch of %d spans failed; mapping them trace by trace", len(items))
    traces: Dict[int, List[T]] = {}
    for item in items:
        traces.setdefault(trace_of(item), []).append(item)
    for members in traces.values():
        try:
            run(members)
            continue
        except Exception:
            pass
        for item in members:
            try:
                run([item])
            except Exception:
                dropped(item)
