"""Who may talk to the local backend, and as which App.

As in PromptWall, each API key is an App (one App per environment, each with
its own key). Every row the backend stores carries its App, and every read
and every ``request_id`` lookup is scoped to the App of the key used; an
optional admin key reads all Apps but sends no events.

Invariants:

- Keys never leave this module: not in logs, reprs, responses or the
  database. An App is identified by its configured name or, for keys nobody
  named, by a label derived from the key with a secret salt kept in the
  database (stable across restarts, useless for guessing the key, and only
  ever shown to that App itself or to the admin).
- Keys come from the environment (``PROMPTWALL_LOCAL_KEYS``,
  ``PROMPTWALL_LOCAL_ADMIN_KEY``) or a keys file, so they need not appear in
  a process listing; ``--api-key`` on the command line still works.
- With no keys configured, any non-empty key is its own App (``open``). The
  ``dev`` command also takes requests without a key: they, and requests with
  the dev key its receiver forwards keyless apps' events with, are App
  ``anonymous``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional

from ..config import ENV_LOCAL_KEYS
from ..serving import HttpError

ENV_ADMIN_KEY = "PROMPTWALL_LOCAL_ADMIN_KEY"
"""A key that reads every App's events (and sends none)."""

ENV_KEYS_FILE = "PROMPTWALL_LOCAL_KEYS_FILE"
"""A file of ``name key`` lines (``@admin key`` for the admin key), read instead of passing keys around."""

ANONYMOUS_APP = "anonymous"
ADMIN = "@admin"


@dataclass(frozen=True)
class Caller:
    """The App a request acts for, or ``app=None`` for the admin (all Apps, read only)."""

    app: Optional[str]

    @property
    def is_admin(self) -> bool:
        return self.app is None


def parse_keys(entries: Iterable[str]) -> Dict[str, str]:
    """``name=key``, ``name key`` or a bare ``key`` entries to {key: app name}; bare keys are named ``app-N``."""
    apps: Dict[str, str] = {}
    for entry in entries:
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        for separator in ("=", " ", "\t"):
            name, found, key = entry.partition(separator)
            if found and name.strip() and key.strip():
                apps[key.strip()] = name.strip()
                break
        else:
            apps[entry] = f"app-{len(apps) + 1}"
    return apps


def load_keys(
    cli_keys: Iterable[str] = (), keys_file: Optional[str] = None, environ: Optional[Mapping[str, str]] = None
) -> Dict[str, str]:
    """Every configured key and its App name (the admin key, if any, under :data:`ADMIN`)."""
    env = os.environ if environ is None else environ
    entries = list(cli_keys)
    entries += [part for part in env.get(ENV_LOCAL_KEYS, "").split(",")]
    path = keys_file or env.get(ENV_KEYS_FILE, "").strip()
    if path:
        entries += Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    apps = parse_keys(entries)
    admin = env.get(ENV_ADMIN_KEY, "").strip()
    if admin:
        apps[admin] = ADMIN
    return apps


class Apps:
    """Key → App. ``keys`` empty: any non-empty key is an App of its own."""

    def __init__(self, keys: Mapping[str, str], salt: bytes, anonymous_key: Optional[str] = None) -> None:
        self._keys = dict(keys)
        self._salt = salt
        self.open = not any(name != ADMIN for name in self._keys.values())
        if anonymous_key:
            self._keys.setdefault(anonymous_key, ANONYMOUS_APP)
        self.allow_anonymous = bool(anonymous_key)

    def __repr__(self) -> str:
        return f"Apps(<{len(self._keys)} keys>, open={self.open}, anonymous={self.allow_anonymous})"

    def caller(self, key: Optional[str]) -> Caller:
        """The App (or admin) for ``key``; HttpError(401) if the key is missing or unknown."""
        if key is None:
            if self.allow_anonymous:
                return Caller(ANONYMOUS_APP)
            raise HttpError(401, "missing API key: send X-API-Key or Authorization: Bearer")
        name = self._keys.get(key)
        if name == ADMIN:
            return Caller(None)
        if name is not None:
            return Caller(name)
        if self.open:
            return Caller(self.label(key))
        raise HttpError(401, "invalid API key")

    def label(self, key: str) -> str:
        """A stable App name for an unnamed key: salted, so it reveals nothing about the key."""
        digest = hmac.new(self._salt, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return "key-" + digest[:16]
