"""Every environment variable promptwall-otel reads, in one place.

Constructor and command-line arguments win over these; an invalid value gets
one warning naming the variable and the default used instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import FrozenSet, Mapping, Optional

import platformdirs

logger = logging.getLogger("promptwall_otel")

APP_NAME = "promptwall-otel"

ENV_LOCAL_KEYS = "PROMPTWALL_LOCAL_KEYS"
"""Comma-separated keys the local backend accepts (none: any non-empty key)."""
ENV_LOCAL_DB = "PROMPTWALL_LOCAL_DB"
"""SQLite file of the local backend."""


def _env(environ: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def local_keys(environ: Optional[Mapping[str, str]] = None) -> FrozenSet[str]:
    raw = _env(environ).get(ENV_LOCAL_KEYS, "")
    return frozenset(key.strip() for key in raw.split(",") if key.strip())


def default_db_path(environ: Optional[Mapping[str, str]] = None) -> str:
    """``$PROMPTWALL_LOCAL_DB`` or ``events.db`` in the user's data directory."""
    configured = _env(environ).get(ENV_LOCAL_DB, "").strip()
    if configured:
        return configured
    return str(Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "events.db")
