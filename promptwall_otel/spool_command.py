"""``promptwall-otel spool``: list, replay and purge what waits in the spool and the dead letters.

Folders: the app spools (one per service) under ``{cache}/spool/``, the
receiver's (one per tenant, holding its key) under ``{cache}/receiver/``, or
one given with ``--dir``; a ``promptetheus`` folder inside one holds runs for
the Promptetheus target. Replay sends with the key and URL configured now
(``PROMPTWALL_API_KEY``, ``PROMPTWALL_BASE_URL``; ``PROMPTETHEUS_API_KEY``,
``PROMPTETHEUS_API_URL`` for runs), or a receiver tenant's own key, through
the same sending worker as the exporter. Nothing here prints a
key or a record's content.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

from . import config, promptetheus
from .stats import ExportStats
from .transport import EventsClient, SendingWorker, Spool
from .transport.http import Destination
from .transport.promptetheus import PromptetheusClient
from .transport.spool import count_of

_TENANT_KEY = "tenant.key"


def _folders(args: argparse.Namespace) -> List[Path]:
    if args.dir:
        return [Path(args.dir).expanduser()]
    found: List[Path] = []
    for root in (config.cache_dir() / "spool", config.cache_dir() / "receiver"):
        if root.is_dir():
            found.extend(sorted(p for p in root.iterdir() if p.is_dir()))
    configured = config.env_str(config.ENV_SPOOL_DIR)
    if configured and Path(configured).is_dir() and Path(configured) not in found:
        found.insert(0, Path(configured))
    runs = [folder / promptetheus.TARGET for folder in found if (folder / promptetheus.TARGET).is_dir()]
    return found + runs


def _holds_runs(folder: Path) -> bool:
    return folder.name == promptetheus.TARGET


def _spool(folder: Path) -> Spool:
    return Spool(str(folder), config.DEFAULT_SPOOL_MAX_BYTES)


def _list(args: argparse.Namespace) -> int:
    folders = _folders(args)
    if not folders:
        print("no spool folders: nothing waits")
        return 0
    for folder in folders:
        spool = _spool(folder)
        batches = list(spool.files())
        dead = spool.dead_letters()
        records = sum(count for _, _, count in batches)
        size = sum(size for _, size, _ in batches)
        owner = "receiver tenant" if (folder / _TENANT_KEY).exists() else "Promptetheus runs" if _holds_runs(folder) \
            else "app"  # fmt: skip
        print(f"{folder} ({owner}): {records} records waiting in {len(batches)} batches ({size} bytes); "
              f"{sum(count_of(p) for p in dead)} dead letters")  # fmt: skip
        if args.verbose:
            for name, size, count in batches:
                print(f"  {name}  {count} records  {size} bytes")
            for path in dead:
                print(f"  dead/{path.name}  {count_of(path)} records")
    return 0



def _replay(args: argparse.Namespace) -> int:
    endpoint = config.events_endpoint(args.base_url)
    status = 0
    for folder in _folders(args):
        spool = _spool(folder)
        if args.dead:
            revived = spool.revive()
            if revived:
                print(f"{folder}: {revived} dead-lettered records back in the queue")
        waiting = spool.pending()
        if not waiting:
            continue
        key = _key_for(folder)
        if not key:
            print(f"{folder}: {waiting} records wait, but no key: set "
                  f"{promptetheus.ENV_KEY if _holds_runs(folder) else config.ENV_API_KEY}")  # fmt: skip
            status = 1
            continue
        stats = ExportStats()
        client: Destination = EventsClient(endpoint, key)
        if _holds_runs(folder):
            client = PromptetheusClient(config.env_str(promptetheus.ENV_URL) or promptetheus.DEFAULT_URL, key)
        worker = SendingWorker(client, spool, stats)
        deadline = time.monotonic() + args.timeout
        done = worker.flush(args.timeout)
        while not done and time.monotonic() < deadline - 0.5:  # an outage answer ends one flush: keep trying
            time.sleep(0.5)
            done = worker.flush(max(0.0, deadline - time.monotonic()))
        worker.close(1.0)
        counts = stats.snapshot()
        left = spool.pending()
        print(f"{folder}: {counts['replayed']} records sent to {client.endpoint} ({counts['exported']} stored, "
              f"{counts['duplicates']} already there, {counts['rejected']} rejected, {counts['dead_lettered']} "
              f"dead-lettered); {left} still waiting")  # fmt: skip
        if not done or left:
            status = 1
    return status


def _key_for(folder: Path) -> Optional[str]:
    tenant = folder / _TENANT_KEY
    if tenant.is_file():
        return tenant.read_bytes().decode("utf-8", "surrogatepass")
    return config.env_str(promptetheus.ENV_KEY if _holds_runs(folder) else config.ENV_API_KEY)


def _purge(args: argparse.Namespace) -> int:
    if not args.yes:
        print("purge deletes records for good; add --yes")
        return 2
    for folder in _folders(args):
        deleted = _spool(folder).purge(dead=args.dead)
        print(f"{folder}: {deleted} {'dead-lettered ' if args.dead else ''}records deleted")
    return 0


def add_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    spool = commands.add_parser("spool", help="list, replay or purge records waiting in the spool and the dead letters")
    actions = spool.add_subparsers(dest="action", required=True)
    for name, run, help_text in (
        ("list", _list, "what waits where (every spool folder in the user cache dir, or --dir)"),
        ("replay", _replay, "send what waits now, with the configured key and URL"),
        ("purge", _purge, "delete what waits (or the dead letters, with --dead)"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--dir", help="one spool folder (default: all of them)")
        if name == "list":
            action.add_argument("-v", "--verbose", action="store_true", help="one line per batch")
        if name in ("replay", "purge"):
            action.add_argument("--dead", action="store_true", help="the dead letters (replay: move them back first)")
        if name == "replay":
            action.add_argument("--base-url", help=f"PromptWall base URL (default ${config.ENV_BASE_URL})")
            action.add_argument("--timeout", type=float, default=60.0, help="seconds to keep trying")
        if name == "purge":
            action.add_argument("--yes", action="store_true", help="really delete")
        action.set_defaults(run=run)
