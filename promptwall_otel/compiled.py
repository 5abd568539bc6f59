"""Which modules run compiled, and the guard that never lets a compiled module run other code than its source.

The per-span path (the mapping, record encoding, the exporter's and the
processor's per-span steps, the receiver's decoding and correlation) is
interpreter overhead spread over thousands of small steps: compiled with
Cython, unchanged, it costs about a third less CPU per span
(benchmarks/README.md). ``setup.py`` compiles the modules named in
:data:`MODULES` when the package is built where Cython and a C compiler are;
each compiled module sits beside its source. Compiling changes no behaviour:
it is the same source, and the tests run both ways (``tests/test_compiled.py``
runs the mapping and encoding tests on the sources).

Invariants:

- A compiled module is imported only if it was built from the source file
  beside it, byte for byte: the build records each source's SHA-256 in
  ``_compiled.json``. An edited checkout that was not rebuilt, a build that
  failed, or ``PROMPTWALL_PURE_PYTHON=1`` imports the source instead. Stale
  machine code never runs; at worst the code is slower.
- This module imports only the standard library: ``setup.py`` reads
  :data:`MODULES` from it before anything is installed.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional, Sequence

ENV_PURE_PYTHON = "PROMPTWALL_PURE_PYTHON"
MANIFEST = "_compiled.json"

# Pure, CPU-bound per-span (per-event) code. Not here: modules that wait on the network or disk (nothing to
# gain), the servers' request handlers (Starlette inspects them; their time is in the HTTP library) and this
# module (it must run before any is built).
MODULES = (
    "promptwall_otel._stores",
    "promptwall_otel.exporter",
    "promptwall_otel.processor",
    "promptwall_otel.promptetheus",
    "promptwall_otel.record",
    "promptwall_otel.backend.checks",
    "promptwall_otel.backend.store",
    "promptwall_otel.mapping.builder",
    "promptwall_otel.mapping.guardrails",
    "promptwall_otel.mapping.ledger",
    "promptwall_otel.mapping.logfire",
    "promptwall_otel.mapping.messages",
    "promptwall_otel.mapping.openinference",
    "promptwall_otel.mapping.openllmetry",
    "promptwall_otel.mapping.options",
    "promptwall_otel.mapping.prices",
    "promptwall_otel.mapping.recent",
    "promptwall_otel.mapping.runs",
    "promptwall_otel.mapping.semconv",
    "promptwall_otel.mapping.values",
    "promptwall_otel.mapping.vercel",
    "promptwall_otel.mapping.view",
    "promptwall_otel.receiver.core",
    "promptwall_otel.receiver.decode",
    "promptwall_otel.transport.encoding",
)

# Cython-only modules (``.pyx``): a faster way to do what the package also does in Python, by other means.
# Where one is not built, stale or turned off, importing it raises ImportError and its caller takes the
# Python path (``receiver.decode`` falls back to the protobuf runtime).
ACCELERATORS = ("promptwall_otel.receiver.wire",)

_PACKAGE_DIR = Path(__file__).resolve().parent


def source_path(module: str, root: Path = _PACKAGE_DIR.parent) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".pyx" if module in ACCELERATORS else ".py")


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compiled_path(module: str) -> Optional[Path]:
    source = source_path(module)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def status() -> Dict[str, str]:
    """Each module of :data:`MODULES` and :data:`ACCELERATORS`: ``compiled``, or why its source (for an
    accelerator: the Python path) runs instead (for ``doctor`` and the tests)."""
    if os.environ.get(ENV_PURE_PYTHON, "").strip().lower() in ("1", "true", "yes"):
        return {module: f"source ({ENV_PURE_PYTHON} is set)" for module in MODULES + ACCELERATORS}
    try:
        built = json.loads((_PACKAGE_DIR / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        built = {}
    found: Dict[str, str] = {}
    for module in MODULES + ACCELERATORS:
        if _compiled_path(module) is None:
            found[module] = "source (not compiled: built without Cython or a C compiler)"
            continue
        try:
            current = source_digest(source_path(module))
        except OSError:
            current = None  # a wheel without sources: what was built is all there is
        if current is not None and built.get(module) != current:
            found[module] = "source (the compiled module was built from another version of it: rebuild)"
        else:
            found[module] = "compiled"
    return found


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the source of the listed modules, where the default finders would take the compiled file."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
                  ) -> Optional[importlib.machinery.ModuleSpec]:  # fmt: skip
        if fullname not in self.modules:
            return None
        if fullname in ACCELERATORS:  # no source to run instead: the caller takes its Python path
            raise ImportError(f"{fullname} is not in use: {status()[fullname]}", name=fullname)
        source = source_path(fullname)
        return importlib.util.spec_from_file_location(fullname, source) if source.exists() else None


def install() -> None:
    """Before the first of :data:`MODULES` is imported: route the ones that must not run compiled to their source."""
    stale = [module for module, how in status().items() if how != "compiled" and _compiled_path(module) is not None]
    if stale and not any(isinstance(finder, _SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst(stale))
