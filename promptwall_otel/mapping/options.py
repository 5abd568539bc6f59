"""What a user can change about the records: content capture, limits, defaults, hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from .prices import PriceTable, default_table

RedactHook = Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]
"""Gets each finished record; returns it (changed or not), or None to drop it."""

DEFAULT_MAX_CONTENT_BYTES = 32 * 1024
DEFAULT_MAX_MESSAGES_BYTES = 16 * 1024
DEFAULT_MAX_RUN_STEPS = 128
DEFAULT_MAX_RUN_SECONDS = 600


@dataclass(frozen=True)
class MappingOptions:
    """How spans become records. ``config.mapping_options_from_env()`` reads these from the environment."""

    mode: str = "sdk"
    """``sdk`` for the in-process exporter, ``vendor`` when spans came through the receiver."""
    capture_content: bool = True
    """False drops prompt, answer and messages; everything else is kept."""
    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES
    """Cap on ``prompt`` and ``answer`` (UTF-8 bytes) and on each message in metadata."""
    max_messages_bytes: int = DEFAULT_MAX_MESSAGES_BYTES
    """The whole message list goes to ``metadata.gen_ai.messages`` only if it fits in this."""
    use_case: Optional[str] = None
    team_id: Optional[str] = None
    integration_id: Optional[str] = None
    dedupe_by_response_id: bool = True
    """Key records of calls with a provider response id by that id, so two instrumentations of one call collapse."""
    group_agent_runs: bool = False
    """Send an agent or workflow run as one event whose ``spans[]`` are its steps (docs/mapping.md, "Agent runs")."""
    max_run_steps: int = DEFAULT_MAX_RUN_STEPS
    """Most stages one run's ``spans[]`` lists; further steps are counted, not listed (billing is unchanged)."""
    max_run_seconds: float = DEFAULT_MAX_RUN_SECONDS
    """A run still open after this long is sent as ordinary events, as are its spans that end later."""
    prices: PriceTable = field(default_factory=default_table)
    redact: Optional[RedactHook] = None

    def __repr__(self) -> str:
        return (
            f"MappingOptions(mode={self.mode!r}, capture_content={self.capture_content}, "
            f"max_content_bytes={self.max_content_bytes}, group_agent_runs={self.group_agent_runs}, "
            f"prices={self.prices.version!r})"
        )
