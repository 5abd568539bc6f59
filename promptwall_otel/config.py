"""Every environment variable promptwall-otel reads, in one place.

Constructor and command-line arguments win over these; an invalid value gets
one warning naming the variable and the default used instead.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import platformdirs

if TYPE_CHECKING:
    from .mapping.options import MappingOptions

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


# --- mapping / content controls ----------------------------------------------

ENV_CAPTURE_CONTENT = "PROMPTWALL_CAPTURE_CONTENT"
ENV_MAX_CONTENT_BYTES = "PROMPTWALL_MAX_CONTENT_BYTES"
ENV_MAX_MESSAGES_BYTES = "PROMPTWALL_MAX_MESSAGES_BYTES"
ENV_PRICES_FILE = "PROMPTWALL_PRICES_FILE"
ENV_USE_CASE = "PROMPTWALL_USE_CASE"
ENV_TEAM_ID = "PROMPTWALL_TEAM_ID"
ENV_INTEGRATION_ID = "PROMPTWALL_INTEGRATION_ID"
ENV_REDACT_HOOK = "PROMPTWALL_REDACT_HOOK"
ENV_DEDUPE_BY_RESPONSE_ID = "PROMPTWALL_DEDUPE_BY_RESPONSE_ID"
ENV_GROUP_AGENT_RUNS = "PROMPTWALL_GROUP_AGENT_RUNS"
ENV_RUN_MAX_STEPS = "PROMPTWALL_RUN_MAX_STEPS"
ENV_RUN_MAX_SECONDS = "PROMPTWALL_RUN_MAX_SECONDS"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_bool(name: str, default: bool, environ: Optional[Mapping[str, str]] = None) -> bool:
    raw = _env(environ).get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    logger.warning("%s=%r is not a boolean; using the default %s", name, raw, default)
    return default


def env_int(name: str, default: int, environ: Optional[Mapping[str, str]] = None, minimum: int = 0) -> int:
    raw = _env(environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        logger.warning("%s=%r is not a whole number >= %d; using the default %d", name, raw, minimum, default)
        return default
    return value


def env_str(name: str, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    return _env(environ).get(name, "").strip() or None


def _load_hook(spec: str) -> Optional[Callable[..., Any]]:
    """``package.module:function`` to the function; a warning and None if it cannot be loaded."""
    module_name, _, attribute = spec.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), attribute)
        if not callable(hook):
            raise TypeError(f"{attribute} is not callable")
        return hook  # type: ignore[no-any-return]
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        logger.warning("%s=%r cannot be loaded (%s); records are sent without a redact hook", ENV_REDACT_HOOK, spec, exc)
        return None


def mapping_options(environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "MappingOptions":
    """Mapping options from the environment; keyword arguments win over variables."""
    from .mapping.options import DEFAULT_MAX_CONTENT_BYTES, DEFAULT_MAX_MESSAGES_BYTES, DEFAULT_MAX_RUN_SECONDS
    from .mapping.options import DEFAULT_MAX_RUN_STEPS, MappingOptions
    from .mapping.prices import PriceTable, default_table

    prices_file = env_str(ENV_PRICES_FILE, environ)
    hook_spec = env_str(ENV_REDACT_HOOK, environ)
    values: Dict[str, Any] = {
        "capture_content": env_bool(ENV_CAPTURE_CONTENT, True, environ),
        "max_content_bytes": env_int(ENV_MAX_CONTENT_BYTES, DEFAULT_MAX_CONTENT_BYTES, environ, minimum=64),
        "max_messages_bytes": env_int(ENV_MAX_MESSAGES_BYTES, DEFAULT_MAX_MESSAGES_BYTES, environ),
        "use_case": env_str(ENV_USE_CASE, environ),
        "team_id": env_str(ENV_TEAM_ID, environ),
        "integration_id": env_str(ENV_INTEGRATION_ID, environ),
        "dedupe_by_response_id": env_bool(ENV_DEDUPE_BY_RESPONSE_ID, True, environ),
        "group_agent_runs": env_bool(ENV_GROUP_AGENT_RUNS, False, environ),
        "max_run_steps": env_int(ENV_RUN_MAX_STEPS, DEFAULT_MAX_RUN_STEPS, environ, minimum=1),
        "max_run_seconds": env_int(ENV_RUN_MAX_SECONDS, DEFAULT_MAX_RUN_SECONDS, environ, minimum=1),
        "prices": PriceTable.load(prices_file) if prices_file else default_table(),
        "redact": _load_hook(hook_spec) if hook_spec else None,
    }
    values.update({key: value for key, value in overrides.items() if value is not None})
    return MappingOptions(**values)


# --- exporter -----------------------------------------------------------------

TARGET_PROMPTWALL = "promptwall"
TARGETS = ("promptwall", "promptetheus")
ENV_TARGETS = "PROMPTWALL_TARGETS"


def targets(given: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> Tuple[str, ...]:
    """The export targets: the argument, else ``PROMPTWALL_TARGETS`` (comma-separated), else PromptWall alone.
    An unknown name is warned about and ignored."""
    names = list(given) if given is not None else (env_str(ENV_TARGETS, environ) or TARGET_PROMPTWALL).split(",")
    chosen: List[str] = []
    for name in (n.strip().lower() for n in names):
        if name in TARGETS and name not in chosen:
            chosen.append(name)
        elif name and name not in TARGETS:
            logger.warning("unknown export target %r ignored (known: %s)", name, ", ".join(TARGETS))
    if not chosen:
        logger.warning("no known export target given; sending to PromptWall")
        chosen.append(TARGET_PROMPTWALL)
    return tuple(chosen)


ENV_API_KEY = "PROMPTWALL_API_KEY"
ENV_BASE_URL = "PROMPTWALL_BASE_URL"
DEFAULT_BASE_URL = "https://api.prompt-wall.com"
DEFAULT_LOCAL_PORT = 8787  # the local backend (`promptwall-otel serve`)
ENV_ENDPOINT = "OTEL_EXPORTER_PROMPTWALL_ENDPOINT"
ENV_HEADERS = "OTEL_EXPORTER_PROMPTWALL_HEADERS"
ENV_TIMEOUT = "OTEL_EXPORTER_PROMPTWALL_TIMEOUT"
ENV_COMPRESSION = "OTEL_EXPORTER_PROMPTWALL_COMPRESSION"
ENV_CERTIFICATE = "OTEL_EXPORTER_PROMPTWALL_CERTIFICATE"
ENV_SPOOL = "PROMPTWALL_SPOOL"
ENV_SPOOL_DIR = "PROMPTWALL_SPOOL_DIR"
ENV_SPOOL_MAX_BYTES = "PROMPTWALL_SPOOL_MAX_BYTES"
ENV_MAX_ATTEMPTS = "PROMPTWALL_MAX_ATTEMPTS"
ENV_MAX_QUEUE_BYTES = "PROMPTWALL_MAX_QUEUE_BYTES"
ENV_MAX_BATCH_BYTES = "PROMPTWALL_MAX_BATCH_BYTES"
ENV_BSP_SCHEDULE_DELAY = "OTEL_BSP_SCHEDULE_DELAY"
ENV_BSP_MAX_QUEUE_SIZE = "OTEL_BSP_MAX_QUEUE_SIZE"
ENV_BSP_MAX_EXPORT_BATCH_SIZE = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
ENV_BSP_EXPORT_TIMEOUT = "OTEL_BSP_EXPORT_TIMEOUT"

# Gzip-compressed batches: a 10-minute outage at 1,000 chat spans/s (a few KB each) took 103 MB (make soak).
DEFAULT_SPOOL_MAX_BYTES = 1024 * 1024 * 1024
# Encoded size of the GenAI spans waiting to be mapped (their objects take about twice that).
DEFAULT_MAX_QUEUE_BYTES = 32 * 1024 * 1024


def env_float(name: str, default: float, environ: Optional[Mapping[str, str]] = None) -> float:
    raw = _env(environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    logger.warning("%s=%r is not a positive number; using the default %s", name, raw, default)
    return default


def parse_headers(raw: str) -> Dict[str, str]:
    """OTel's ``k=v,k2=v2`` header list (values percent-decoded); malformed pairs are skipped with a warning."""
    from urllib.parse import unquote

    headers: Dict[str, str] = {}
    for pair in filter(None, (item.strip() for item in raw.split(","))):
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            logger.warning("%s: ignoring malformed entry (expected key=value)", ENV_HEADERS)
            continue
        headers[unquote(name.strip())] = unquote(value.strip())
    return headers


def events_endpoint(base_url: Optional[str] = None, endpoint: Optional[str] = None,
                    environ: Optional[Mapping[str, str]] = None) -> str:  # fmt: skip
    """``endpoint`` | ``$OTEL_EXPORTER_PROMPTWALL_ENDPOINT`` | ``{base}/v1/events``."""
    explicit = endpoint or env_str(ENV_ENDPOINT, environ)
    if explicit:
        return explicit
    base = base_url or env_str(ENV_BASE_URL, environ) or DEFAULT_BASE_URL
    return base.rstrip("/") + "/v1/events"


def compression(value: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> str:
    """``auto`` (the default: none to this machine, gzip elsewhere; ``transport.http.compression_for``),
    ``gzip`` or ``none``."""
    raw = (value or env_str(ENV_COMPRESSION, environ) or "auto").lower()
    if raw not in ("auto", "gzip", "none"):
        logger.warning("%s=%r is not auto, gzip or none; using auto", ENV_COMPRESSION, raw)
        return "auto"
    return raw


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def default_spool_dir(environ: Optional[Mapping[str, str]] = None) -> str:
    """One spool per service (``OTEL_SERVICE_NAME``), whatever the key or URL.

    Records wait for the backend, not for a key: whatever the folder holds is
    sent with the key and URL configured when it goes out, so records kept for
    lack of a key, or under a key since rotated, or for a mistyped URL, leave
    once the configuration is right. Services with different keys get
    different folders; one service run under several keys on one machine
    needs ``PROMPTWALL_SPOOL_DIR`` per key.
    """
    service = _env(environ).get("OTEL_SERVICE_NAME", "").strip() or "default"
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in service)[:64].lstrip(".") or "default"
    return str(cache_dir() / "spool" / label)
