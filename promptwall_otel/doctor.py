"""``promptwall-otel doctor``: what stands between this environment and events on the dashboard, in plain words.

One run checks, in order: the OpenTelemetry and promptwall-otel versions
(and whether the per-span modules run compiled);
each installed GenAI instrumentation (does it import, does it instrument, is
a known-broken version pair installed, is content capture on); the key (set
or not, never shown); the endpoint (does it answer, does it take the key; an
empty batch stores nothing); and what waits in the spool and the dead
letters. Exit code 0 only when events would flow: a key, an endpoint that
takes it, and at least one GenAI instrumentation that loads.

The checks read the environment as the exporter does (``config``), so what
doctor says is what ``configure()`` and ``opentelemetry-instrument`` would do.
"""

from __future__ import annotations

import argparse
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from . import config
from .version import __version__

_GENAI = re.compile(r"openai|anthropic|bedrock|langchain|llama.?index|openinference|genai|vertexai|mistral|cohere|groq"
                    r"|ollama|together|replicate|watsonx|crewai|haystack|agents|litellm|transformers|gemini|claude",
                    re.IGNORECASE)  # fmt: skip


class Finding(NamedTuple):
    ok: Optional[bool]  # True fine, False blocks events, None worth knowing
    text: str


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _release(version: Optional[str]) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version or "")[:3])


# Version pairs known not to work together, with the fix. Each rule: (instrumentation dist, its versions,
# the other dist, the other's versions it fails with, why, fix). Versions compare as release tuples.
KNOWN_BROKEN: List[Tuple[str, Callable[[Tuple[int, ...]], bool], str, Callable[[Tuple[int, ...]], bool], str, str]] = [
    ("opentelemetry-instrumentation-openai-v2", lambda v: v[:2] == (2, 4), "opentelemetry-util-genai",
     lambda v: v >= (1, 2), "it imports opentelemetry.util.genai.instruments, which util-genai 1.2 removed",
     "pip install 'opentelemetry-util-genai==0.4b0'"),
    ("opentelemetry-instrumentation-openai-v2", lambda v: v[:2] == (2, 4), "opentelemetry-util-genai",
     lambda v: (1, 0) <= v < (1, 2), "util-genai 1.0 and 1.1 refuse OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true",
     "pip install 'opentelemetry-util-genai==0.4b0'"),
]  # fmt: skip


def broken_pairs(versions: Dict[str, Optional[str]]) -> List[str]:
    """What the known-broken table says about these installed versions (dist -> version or None)."""
    found = []
    for dist, when, other, other_when, why, fix in KNOWN_BROKEN:
        mine, theirs = versions.get(dist), versions.get(other)
        if mine and theirs and when(_release(mine)) and other_when(_release(theirs)):
            found.append(f"{dist} {mine} with {other} {theirs}: {why}. Fix: {fix}")
    return found


def _content_capture(dist: str) -> Finding:
    env = os.environ
    if dist == "opentelemetry-instrumentation-openai-v2" or dist.startswith("opentelemetry-instrumentation-google-genai"):
        on = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() in ("true", "1", "span_only",
                                                                                                   "span_and_event")
        return Finding(None if on else False, "content capture on" if on else
                       "content capture OFF: prompts and answers are not recorded; set "
                       "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true (and OTEL_LOGS_EXPORTER=promptwall "
                       "under opentelemetry-instrument, which carries it as log records)")  # fmt: skip
    if dist.startswith("openinference-"):
        hidden = [name for name in ("OPENINFERENCE_HIDE_INPUTS", "OPENINFERENCE_HIDE_OUTPUTS")
                  if env.get(name, "").strip().lower() in ("true", "1")]  # fmt: skip
        return Finding(None if not hidden else False, "content capture on" if not hidden else
                       f"content hidden by {', '.join(hidden)}")  # fmt: skip
    if dist.startswith("opentelemetry-instrumentation-") and env.get("TRACELOOP_TRACE_CONTENT", "true").lower() == "false":
        return Finding(False, "content hidden by TRACELOOP_TRACE_CONTENT=false")
    return Finding(None, "content capture: the instrumentation's default")


def announce(processor: Any) -> None:
    """At start-up (``configure()``, ``opentelemetry-instrument``): one INFO line saying where records go, and one
    warning per known-broken instrumentation pair or content capture left off. Cheap: package metadata only."""
    import logging

    log = logging.getLogger("promptwall_otel")
    exporter = processor.exporter
    for outlet in exporter.outlets:
        log.info("%s: GenAI spans go to %s (spool %r); `promptwall-otel doctor` checks the set-up",
                 outlet.worker.target, outlet.worker.client.endpoint, outlet.worker.store)  # fmt: skip
    versions = {dist: _version(dist) for dist in {rule[0] for rule in KNOWN_BROKEN} | {rule[2] for rule in KNOWN_BROKEN}}
    for text in broken_pairs(versions):
        log.warning("PromptWall: %s; until then this instrumentation sends nothing", text)
    if versions.get("opentelemetry-instrumentation-openai-v2") and _content_capture(
            "opentelemetry-instrumentation-openai-v2").ok is False:  # fmt: skip
        log.warning("PromptWall: opentelemetry-instrumentation-openai-v2 records no prompts or answers unless "
                    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true")  # fmt: skip


def instrumentations(instrument: bool = True) -> List[Finding]:
    findings: List[Finding] = []
    versions = {dist: _version(dist) for dist in {rule[0] for rule in KNOWN_BROKEN} | {rule[2] for rule in KNOWN_BROKEN}}
    broken = broken_pairs(versions)
    seen = 0
    for entry in metadata.entry_points(group="opentelemetry_instrumentor"):
        dist = entry.dist.name if entry.dist is not None else entry.value.split(":")[0]
        if not _GENAI.search(dist) and not _GENAI.search(entry.name):
            continue
        seen += 1
        label = f"{dist} {entry.dist.version if entry.dist is not None else ''}".strip()
        try:
            instrumentor = entry.load()()
        except Exception as exc:  # an instrumentation that fails to import is exactly what we look for
            hint = next((b for b in broken if b.startswith(dist)), "")
            findings.append(Finding(False, f"{label}: does not import ({type(exc).__name__}: {exc})"
                                    + (f"; {hint}" if hint else "")))  # fmt: skip
            continue
        problem = _instrument_once(instrumentor) if instrument else None
        if problem:
            findings.append(Finding(False, f"{label}: imports but does not instrument ({problem})"))
            continue
        capture = _content_capture(dist)
        findings.append(Finding(True if capture.ok is None else None, f"{label}: loads and instruments; {capture.text}"))
    for text in broken:
        if not any(text.split(" ", 1)[0] in f.text and f.ok is False for f in findings):
            findings.append(Finding(False, text))
    if not seen:
        findings.append(Finding(False, "no GenAI instrumentation installed: install one for your client, e.g. "
                                "pip install opentelemetry-instrumentation-openai-v2 'opentelemetry-util-genai==0.4b0' "
                                "(or make GenAI spans yourself)"))  # fmt: skip
    return findings


def _instrument_once(instrumentor: Any) -> Optional[str]:
    try:
        from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

        conflict = get_dependency_conflicts(list(instrumentor.instrumentation_dependencies()))
        if conflict is not None:
            return f"{conflict}; install the library it instruments"
        instrumentor.instrument(skip_dep_check=True)
        instrumentor.uninstrument()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def endpoint() -> List[Finding]:
    import httpx

    url = config.events_endpoint()
    key = config.env_str(config.ENV_API_KEY)
    findings = [Finding(True, f"{config.ENV_API_KEY} is set (not shown)") if key else
                Finding(False, f"{config.ENV_API_KEY} is not set: records wait in the spool until it is")]  # fmt: skip
    if not re.match(r"https?://", url):
        return findings + [Finding(False, f"endpoint {url!r} has no http:// or https://: set {config.ENV_BASE_URL} "
                                          "to a full URL, e.g. http://127.0.0.1:8787")]  # fmt: skip
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    try:
        response = httpx.post(url, content=b'{"events":[]}', headers=headers, timeout=5)
    except httpx.HTTPError as exc:
        return findings + [Finding(False, f"endpoint {url} does not answer ({type(exc).__name__}); is the backend "
                                          f"running? (promptwall-otel serve) Set {config.ENV_BASE_URL} if it is elsewhere")]
    if response.status_code in (401, 403):
        return findings + [Finding(False, f"endpoint {url} refused the key (HTTP {response.status_code}): check "
                                          f"{config.ENV_API_KEY}")]  # fmt: skip
    if response.status_code in (200, 207, 400, 413, 422):
        return findings + [Finding(True if key else None, f"endpoint {url} answers" + (" and takes the key" if key else ""))]
    return findings + [Finding(False, f"endpoint {url} answered HTTP {response.status_code}: is it a PromptWall "
                                      "events endpoint (…/v1/events)?")]  # fmt: skip


def spool() -> List[Finding]:
    from .transport.spool import Spool, count_of

    directory = config.env_str(config.ENV_SPOOL_DIR) or config.default_spool_dir()
    if not Path(directory).is_dir():
        return [Finding(None, f"spool {directory}: empty")]
    store = Spool(directory, config.DEFAULT_SPOOL_MAX_BYTES)
    waiting = store.pending()
    dead = sum(count_of(path) for path in store.dead_letters())
    text = f"spool {directory}: {waiting} records waiting, {dead} dead letters"
    if dead:
        text += " (promptwall-otel spool list / replay --dead)"
    return [Finding(None, text)]


def speed() -> Finding:
    """Whether the per-span modules run compiled (promptwall_otel/compiled.py); pure Python works, ~1.5x the CPU."""
    from . import compiled

    found = compiled.status()
    source = {module: how for module, how in found.items() if how != "compiled"}
    if not source:
        return Finding(None, f"per-span modules: all {len(found)} compiled")
    reason = sorted(set(source.values()))[0]
    return Finding(None, f"per-span modules: {len(source)} of {len(found)} run as pure Python, e.g. "
                         f"{min(source)}: {reason}")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    sdk, api = _version("opentelemetry-sdk"), _version("opentelemetry-api")
    sections = [
        ("versions", [Finding(None, f"promptwall-otel {__version__}, opentelemetry-api {api}, opentelemetry-sdk {sdk}"),
                      speed()]),
        ("GenAI instrumentations", instrumentations(instrument=not args.no_instrument)),
        ("key and endpoint", endpoint()),
        ("waiting", spool()),
    ]
    blocked = False
    for title, findings in sections:
        print(f"{title}:")
        for finding in findings:
            mark = {True: "ok  ", False: "FIX ", None: "    "}[finding.ok]
            print(f"  {mark}{finding.text}")
            blocked = blocked or finding.ok is False
    print("events would flow" if not blocked else "events would NOT flow: fix the lines marked FIX")
    return 1 if blocked else 0


def add_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    doctor = commands.add_parser("doctor", help="check what stands between this environment and events on the dashboard")
    doctor.add_argument("--no-instrument", action="store_true",
                        help="only import the instrumentations, do not instrument and uninstrument them")
    doctor.set_defaults(run=run)
