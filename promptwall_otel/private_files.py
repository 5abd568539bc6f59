"""Files and folders only their owner can read: the spool, the receiver's keys, the local backend's database.

Prompts, answers and API keys land in them, and on a shared machine nobody
else may read those. What this package creates is private from its first byte
(made with its mode, never chmod-ed after a window open to others); a file or
folder of ours that an earlier version left open is tightened when next used.
A folder the user named that already exists is theirs: only the files we put
in it are made private.
"""

from __future__ import annotations

import os
from pathlib import Path


def _create_missing(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass


def _tighten(path: Path, mode: int) -> None:
    """Take group and other access away from ``path`` if it has any and is ours."""
    try:
        found = path.stat()
        if found.st_mode & 0o077 and found.st_uid == os.geteuid():
            os.chmod(path, mode)
    except OSError:
        pass


def make_private_dir(path: Path) -> None:
    """Create ``path`` and missing parents 0700; tighten it if an earlier version left it open."""
    _create_missing(path)
    _tighten(path, 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def make_private_database(path: str) -> None:
    """Create the SQLite file ``path`` 0600 (missing folders 0700) before SQLite opens it.

    SQLite gives a database's ``-wal`` and ``-shm`` files the database file's
    own mode, so those follow. ``:memory:`` and ``file:`` URIs are left to SQLite.
    """
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    file = Path(path)  # as SQLite will open it
    _create_missing(file.parent)
    try:
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        for each in (file, Path(f"{file}-wal"), Path(f"{file}-shm"), Path(f"{file}-journal")):
            _tighten(each, 0o600)
