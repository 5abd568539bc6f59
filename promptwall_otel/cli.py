"""The ``promptwall-otel`` command: run the local backend, read what it stored."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence

import httpx

from . import config, doctor, promptetheus, spool_command
from .backend.process import CONSOLE_PREFIX, READY_PREFIX
from .version import __version__

RECEIVER_READY_PREFIX = "promptwall-otel receiver listening on "
_DEFAULT_LOCAL_URL = f"http://127.0.0.1:{config.DEFAULT_LOCAL_PORT}"
_DEV_KEY = "local-dev"
_MiB = 1024 * 1024
_SERVER_EXTRA = "the servers need the 'server' extra: pip install 'promptwall-otel[server]'"


def _limits(args: argparse.Namespace) -> Any:
    from .webserver import Limits

    defaults = Limits()
    body = args.max_body_bytes or defaults.max_body_bytes
    decompressed = args.max_decompressed_bytes or defaults.max_decompressed_bytes
    return Limits(
        max_body_bytes=body,
        max_decompressed_bytes=decompressed,
        # Raised caps raise the default budget with them, so that one request at its caps always fits.
        budget_bytes=args.memory_budget_bytes or max(defaults.budget_bytes, 2 * (body + decompressed)),
        max_concurrent_requests=args.max_concurrent_requests or defaults.max_concurrent_requests,
        header_timeout_s=args.header_timeout or defaults.header_timeout_s,
        body_timeout_s=args.body_timeout or defaults.body_timeout_s,
        idle_timeout_s=args.idle_timeout or defaults.idle_timeout_s,
    )


def _require_server_extra() -> None:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise SystemExit(_SERVER_EXTRA) from None


def _db_path(args: argparse.Namespace) -> str:
    return args.db or config.default_db_path()  # the store creates it and its folder, private


def _backend(args: argparse.Namespace, port: int, anonymous_key: Optional[str] = None) -> Any:
    from .backend.apps import ADMIN, load_keys
    from .backend.server import BackendConfig, BackendServer
    from .backend.store import EventStore

    keys = load_keys(getattr(args, "api_key", None) or (), args.keys_file)
    if getattr(args, "api_key", None):
        logging.getLogger("promptwall_otel.backend").warning(
            "--api-key shows keys in the process list; prefer %s or --keys-file", config.ENV_LOCAL_KEYS)
    db = _db_path(args)
    try:
        store = EventStore(db)
    except (OSError, sqlite3.Error) as exc:  # a folder that cannot be made, a file that is not a database
        raise SystemExit(f"error: cannot open the database {db!r} ({type(exc).__name__}: {exc}); "
                         f"choose another with --db or {config.ENV_LOCAL_DB}") from None
    server = BackendServer(BackendConfig(host=args.host, port=port, db=db, api_keys=keys,
                                         anonymous_key=anonymous_key, limits=_limits(args),
                                         announce_arrivals=not getattr(args, "quiet", True)), store)  # fmt: skip
    log = logging.getLogger("promptwall_otel.backend")
    apps = sum(1 for name in keys.values() if name != ADMIN)
    if apps:
        log.warning("accepting %d configured API key(s), one App each%s", apps,
                    " and an admin key" if apps < len(keys) else "")  # fmt: skip
    else:
        log.warning("no API keys configured (%s, --keys-file): any non-empty key is accepted as an App of its own",
                    config.ENV_LOCAL_KEYS)  # fmt: skip
    if anonymous_key:
        log.warning("dev: apps that send no API key are accepted too, as App 'anonymous'")
    log.warning("storing events in %s", server.store.path)
    return server


def _serve(args: argparse.Namespace) -> int:
    _require_server_extra()
    server = _backend(args, args.port).start()
    from .webserver import tune_interpreter_for_serving

    tune_interpreter_for_serving(receiver=False)
    print(READY_PREFIX + server.url, flush=True)
    print(CONSOLE_PREFIX + server.url + "/", flush=True)
    return _serve_until_stopped(server)


def _serve_until_stopped(*servers: Any) -> int:
    """Wait for SIGTERM or Ctrl-C, then stop ``servers`` in order (None: not running)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            if server is not None:
                server.stop()
    return 0


def _receive(args: argparse.Namespace) -> int:
    if args.api_key:
        logging.getLogger("promptwall_otel.receiver").warning(
            "--api-key shows the key in the process list; prefer %s", config.ENV_API_KEY)
    forward_to = args.forward_to or config.env_str(config.ENV_BASE_URL) or config.DEFAULT_BASE_URL
    return _run_receiver(args, forward_to, api_key=args.api_key or config.env_str(config.ENV_API_KEY))


def _run_receiver(args: argparse.Namespace, forward_to: str, api_key: Optional[str], backend: Optional[Any] = None) -> int:
    _require_server_extra()
    from .receiver.app import Receiver

    tokens = list(args.receiver_token or ()) + [t for t in (config.env_str("PROMPTWALL_RECEIVER_TOKENS") or "").split(",") if t]
    receiver = Receiver(
        forward_to,
        args.http,
        None if args.grpc in ("", "none", "off") else args.grpc,
        api_key=api_key,
        pass_through=not args.no_pass_through,
        tokens=tokens,
        correlation_wait_s=args.correlation_wait,
        spool_root=args.spool_dir,
        mapping=config.mapping_options(mode=args.mode),
        promptetheus=promptetheus.Settings.resolve() if args.promptetheus else None,
        limits=_limits(args),
        compression=args.forward_compression,
    ).start()
    from .webserver import tune_interpreter_for_serving

    tune_interpreter_for_serving()
    grpc_text = f"127.0.0.1:{receiver.grpc_port}" if receiver.grpc_port else "off"
    print(f"{RECEIVER_READY_PREFIX}http={receiver.http_url} grpc={grpc_text} forwarding to {receiver.core.endpoint}",
          flush=True)  # fmt: skip
    if backend is not None:  # dev: after the two ready lines, which scripts read in that order
        print(CONSOLE_PREFIX + backend.url + "/", flush=True)
    return _serve_until_stopped(receiver, backend)


def _dev(args: argparse.Namespace) -> int:
    _require_server_extra()
    args.host = "127.0.0.1"
    backend = _backend(args, args.backend_port, anonymous_key=_DEV_KEY).start()
    print(READY_PREFIX + backend.url, flush=True)
    # Apps that send no key reach the backend with the dev key, which it files under App "anonymous".
    return _run_receiver(args, backend.url, args.api_key or config.env_str(config.ENV_API_KEY) or _DEV_KEY, backend)


def _get(args: argparse.Namespace, route: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """GET from the read API; any failure is one line naming the URL and the fix (exit code 1)."""
    given = args.api_key or os.environ.get("PROMPTWALL_API_KEY")
    key = given or _DEV_KEY
    base = args.url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise SystemExit(f"error: --url {args.url!r} needs http:// or https://, e.g. {_DEFAULT_LOCAL_URL}")
    try:
        response = httpx.get(base + route, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    except httpx.HTTPError as exc:
        raise SystemExit(f"error: cannot reach the backend at {base} ({type(exc).__name__}): is `promptwall-otel serve`"
                         f" running? Point --url at it if it is elsewhere") from None  # fmt: skip
    if response.status_code == 401:
        raise SystemExit("error: the backend refused the key: " + (
            "check --api-key or PROMPTWALL_API_KEY" if given else
            "no key given; pass --api-key or set PROMPTWALL_API_KEY (any key works on a backend without configured keys)"))
    if response.status_code != 200:
        raise SystemExit(f"error: {base}{route}: HTTP {response.status_code}: {response.text[:200]}")
    result: Dict[str, Any] = response.json()
    return result


def _table(rows: List[List[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [list(headers), *rows]]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _clip(value: Any, width: int) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _events(args: argparse.Namespace) -> int:
    params: Dict[str, Any] = {"limit": args.limit}
    for name in ("session_id", "end_user_id", "model"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    for pair in args.metadata or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --metadata {pair!r} must be KEY=VALUE")
        params[f"metadata.{key}"] = value
    requests = _get(args, "/api/console/requests", params)["requests"]
    if args.json:
        for event in requests:
            print(json.dumps(event, ensure_ascii=False))
        return 0
    rows = [
        [
            _clip(event.get("started_at", "")[:19].replace("T", " "), 19),
            _clip(event.get("model"), 24),
            str(event.get("prompt_tokens", "")),
            str(event.get("completion_tokens", "")),
            str(event.get("latency_ms", "")),
            _clip(event.get("status"), 7),
            _clip(event.get("session_id"), 14),
            _clip(event.get("prompt"), 32),
            _clip(event.get("answer"), 32),
        ]
        for event in requests
    ]
    headers = ("started (UTC)", "model", "in", "out", "ms", "status", "session", "prompt", "answer")
    print(_table(rows, headers) if rows else "no events yet")
    return 0


def _billing(args: argparse.Namespace) -> int:
    bill = _get(args, "/api/console/billing")
    print(
        f"{bill['events']} events, {bill['total_tokens']} tokens "
        f"({bill['prompt_tokens']} in / {bill['completion_tokens']} out): "
        f"${bill['credit_usd']:.6f} at ${bill['rate_usd_per_million_tokens']:.0f} per 1M tokens"
    )
    rows = [[row["model"], str(row["events"]), str(row["total_tokens"]), f"${row['credit_usd']:.6f}"]
            for row in bill["by_model"]]  # fmt: skip
    if rows:
        print(_table(rows, ("model", "events", "tokens", "credit")))
    return 0


def _sessions(args: argparse.Namespace) -> int:
    if args.session_id:
        from urllib.parse import quote

        body = _get(args, "/api/console/sessions/" + quote(args.session_id, safe=""))
        print(f"session {body['session_id']}: {body['count']} turns")
        for turn in body["turns"]:
            print(f"\n[{turn['started_at'][:19].replace('T', ' ')}] {turn.get('end_user_id') or 'user'}: "
                  f"{_clip(turn.get('prompt'), 200)}")  # fmt: skip
            print(f"  {turn.get('model') or 'assistant'} ({turn.get('total_tokens', 0)} tokens): {_clip(turn.get('answer'), 200)}")
        return 0
    sessions = _get(args, "/api/console/sessions")["sessions"]
    rows = [[s["session_id"], str(s["turns"]), str(s["total_tokens"]), s.get("end_user_id") or "", s["last_at"][:19]]
            for s in sessions]  # fmt: skip
    print(_table(rows, ("session", "turns", "tokens", "user", "last (UTC)")) if rows else "no sessions yet")
    return 0


def _in_mib(size: int) -> str:
    return f"{size} = {size / _MiB:g} MiB"


def _add_limit_args(command: argparse.ArgumentParser) -> None:
    from .serving import Limits

    limits = Limits()
    group = command.add_argument_group("limits (docs/backend.md, docs/receiver.md)")
    group.add_argument("--max-body-bytes", type=int,
                       help=f"largest request body as sent (default: {_in_mib(limits.max_body_bytes)})")
    group.add_argument("--max-decompressed-bytes", type=int,
                       help=f"largest request body once decompressed (default: {_in_mib(limits.max_decompressed_bytes)})")
    group.add_argument("--memory-budget-bytes", type=int,
                       help=f"request bodies held at once, all requests together (default: {limits.budget_bytes}, "
                            "or 2 × the two caps above if that is more)")
    group.add_argument("--max-concurrent-requests", type=int,
                       help=f"requests handled at once; more wait 1 s, then 503 (default: {limits.max_concurrent_requests})")
    group.add_argument("--header-timeout", type=float,
                       help=f"seconds a connection has to send its request headers (default: {limits.header_timeout_s:g})")
    group.add_argument("--body-timeout", type=float,
                       help=f"seconds a request has to send its body (default: {limits.body_timeout_s:g})")
    group.add_argument("--idle-timeout", type=float,
                       help=f"seconds a kept-alive connection may idle (default: {limits.idle_timeout_s:g})")


class _ShowDefaults(argparse.HelpFormatter):
    """Every option's help names its default, unless the help already says it or there is none to name."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and "default" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and not isinstance(action.default, bool)):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """A parser whose help shows defaults; subcommands' parsers (and theirs) are of this class too."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _ShowDefaults)
        super().__init__(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="promptwall-otel", description=__doc__)
    parser.add_argument("--version", action="version", version=f"promptwall-otel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the local PromptWall-compatible backend")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=config.DEFAULT_LOCAL_PORT, help="0 picks a free port")
    serve.add_argument("--db", help=f"SQLite file or :memory: (default: ${config.ENV_LOCAL_DB} or the user data dir)")
    serve.add_argument("--api-key", action="append",
                       help=f"accepted key, repeatable; visible in ps: prefer ${config.ENV_LOCAL_KEYS} or --keys-file "
                            "(default: none of the three, so any key is accepted)")
    serve.add_argument("--keys-file", help="file of 'app-name key' lines, one App each ('@admin key': reads all Apps)")
    serve.add_argument("--quiet", action="store_true",
                       help="no summary line as events arrive (default: one every 2 s while events arrive)")
    _add_limit_args(serve)
    serve.set_defaults(run=_serve)

    for name, run, help_text in (
        ("receive", _receive, "run the OTLP receiver: GenAI spans from a collector → PromptWall"),
        ("dev", _dev, "run the local backend and a receiver forwarding to it, in one process"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--http", default="127.0.0.1:4318", help="OTLP/HTTP address (port 0: any free port)")
        command.add_argument("--grpc", default="127.0.0.1:4317", help="OTLP/gRPC address, or 'off'")
        if name == "receive":
            command.add_argument("--forward-to", help=f"PromptWall base URL (default ${config.ENV_BASE_URL} or the public API)")
        else:
            command.add_argument("--backend-port", type=int, default=config.DEFAULT_LOCAL_PORT,
                                 help="the local backend's port on 127.0.0.1 (0 picks a free port)")
            command.add_argument("--db", help=f"SQLite file of the local backend, or :memory: "
                                              f"(default: ${config.ENV_LOCAL_DB} or the user data dir)")
            command.add_argument("--keys-file", help="the local backend's keys file, see serve (default: none; "
                                                     "every key is accepted)")
        command.add_argument("--api-key", help=f"PromptWall key for callers that send none (default ${config.ENV_API_KEY})")
        command.add_argument("--no-pass-through", action="store_true",
                             help="ignore callers' X-API-Key / Authorization; always use --api-key")
        command.add_argument("--receiver-token", action="append",
                             help="require X-Receiver-Token from callers, repeatable (or $PROMPTWALL_RECEIVER_TOKENS)")
        command.add_argument("--correlation-wait", type=float, default=2.0,
                             help="seconds a span waits for its content logs and ancestors")
        command.add_argument("--spool-dir", help="where undeliverable records wait, one folder per key inside "
                                                 f"(default: {config.cache_dir() / 'receiver'})")
        command.add_argument("--promptetheus", action="store_true",
                             default=promptetheus.TARGET in (config.env_str(config.ENV_TARGETS) or "").lower(),
                             help="also forward every call, as a one-step run, to Promptetheus ($PROMPTETHEUS_API_URL, "
                                  "$PROMPTETHEUS_API_KEY, $PROMPTETHEUS_PROJECT_ID; on when $PROMPTWALL_TARGETS lists "
                                  "promptetheus)")
        command.add_argument("--mode", default="vendor", choices=["vendor", "sdk", "ingest"],
                             help="the events' mode (default vendor: from someone else's pipeline)")
        command.add_argument("--forward-compression", default="auto", choices=["auto", "gzip", "none"],
                             help="gzip the requests to PromptWall; auto: not to an address on this machine")
        _add_limit_args(command)
        command.set_defaults(run=run)

    for name, run, help_text in (
        ("events", _events, "print recent events from a running backend"),
        ("sessions", _sessions, "list sessions, or replay one, from a running backend"),
        ("billing", _billing, "print the billing summary of a running backend"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--url", default=_DEFAULT_LOCAL_URL, help="backend base URL")
        command.add_argument("--api-key", help="key for the read API (default: $PROMPTWALL_API_KEY)")
        if name == "events":
            command.add_argument("--limit", type=int, default=20, help="newest N events, at most 1000")
            command.add_argument("--session-id", help="only this session's events")
            command.add_argument("--end-user-id", help="only this user's events")
            command.add_argument("--model", help="only this model's events")
            command.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                                 help="only events whose metadata KEY equals VALUE (repeatable)")
            command.add_argument("--json", action="store_true", help="one JSON event per line, in full")
        if name == "sessions":
            command.add_argument("session_id", nargs="?", help="replay this session turn by turn")
        command.set_defaults(run=run)
    spool_command.add_parser(commands)
    doctor.add_parser(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # uvicorn warns once per malformed request (already answered 400): under attack that floods the log.
    logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        asked = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in ("port", "backend_port", "http", "grpc")
                 if getattr(args, name, None) not in (None, "", "off", "none")]  # fmt: skip
        print(f"error: an address is already in use ({', '.join(asked)}): is another promptwall-otel serve, dev or "
              "receive running? Stop it, or choose other ports (0 picks a free one)", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
