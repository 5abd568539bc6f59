"""Packaging script: everything is in pyproject.toml but the optional compiled modules.

The modules named in ``promptwall_otel/compiled.py`` (Python sources, and the
Cython-only accelerators with a Python path beside them) are compiled with Cython
when it and a C compiler are available (``pip install .`` gets Cython from the
build requirements); without a compiler, or with ``PROMPTWALL_PURE_PYTHON=1``,
the package installs as pure Python and behaves the same, slower. The build
records each compiled source's SHA-256 in ``promptwall_otel/_compiled.json``:
at import, a compiled module whose source has changed since is passed over.

In a checkout: ``python setup.py build_ext --inplace`` (``make`` does it when a
compiled source changes).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any, Dict, List

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
compiled = runpy.run_path(str(ROOT / "promptwall_otel" / "compiled.py"))


def extensions() -> List[Any]:
    if os.environ.get(compiled["ENV_PURE_PYTHON"], "").strip().lower() in ("1", "true", "yes"):
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        print("promptwall-otel: Cython is not installed; installing pure Python", file=sys.stderr)
        return []
    modules = [Extension(name, [str(compiled["source_path"](name, Path(".")))],
                         extra_compile_args=["-O2", "-g0", "-w"])  # -O3 -g: slower to build, no faster; -w: generated C
               for name in compiled["MODULES"] + compiled["ACCELERATORS"]]  # fmt: skip
    return cythonize(modules, language_level=3, quiet=True, nthreads=os.cpu_count() or 1,
                     compiler_directives={"binding": True})  # fmt: skip


class OptionalBuildExt(build_ext):
    """Compiles what it can; a module that fails to compile stays pure Python, with one line saying so."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1
        self._digests: Dict[str, str] = {}

    def build_extension(self, ext: Any) -> None:
        source = compiled["source_path"](ext.name, ROOT)
        digest = compiled["source_digest"](source)  # before compiling: the record may only claim what was built
        try:
            super().build_extension(ext)
        except Exception as error:  # no compiler, no headers: pure Python is correct, only slower
            print(f"promptwall-otel: {ext.name} not compiled ({error}); it runs as pure Python", file=sys.stderr)
            return
        self._digests[ext.name] = digest

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            print(f"promptwall-otel: compiled modules not built ({error}); pure Python", file=sys.stderr)
        package_dir = Path(self.get_ext_fullpath("promptwall_otel._manifest")).parent
        manifest = package_dir / compiled["MANIFEST"]
        try:
            built = json.loads(manifest.read_text("utf-8"))
        except (OSError, ValueError):
            built = {}
        built.update(self._digests)
        package_dir.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(built, indent=1, sort_keys=True) + "\n", "utf-8")


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
