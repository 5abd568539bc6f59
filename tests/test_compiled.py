"""The compiled modules (promptwall_otel/compiled.py, setup.py): real builds, the same records, never stale.

A copy of the package is built with the real ``setup.py build_ext`` (or, when
the checkout was built by ``make``, its compiled files are copied); each check
runs in a fresh interpreter on that copy, so what is imported is what a user's
install would import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from promptwall_otel import compiled

ROOT = Path(__file__).resolve().parent.parent

# Maps every recorded capture of a real instrumentation and prints the records, and how each module runs.
MAP_CAPTURES = """
import json, sys
from promptwall_otel import compiled
from promptwall_otel.mapping import MappingOptions
from promptwall_otel.mapping.ledger import TraceLedger
from tests.mapping.captures import CAPTURES, load

records = {}
for path in sorted(CAPTURES.glob("*.json")):
    views, logs = load(path.stem)
    records[path.stem] = TraceLedger().map_batch(
        views, MappingOptions(), logs_for=lambda v: [log for log in logs if log.span_id == v.span_id])
print(json.dumps({"status": compiled.status(), "records": records}, sort_keys=True, default=str))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout with every listed module compiled."""
    copy = tmp_path_factory.mktemp("compiled") / "checkout"
    shutil.copytree(ROOT / "promptwall_otel", copy / "promptwall_otel",
                    ignore=shutil.ignore_patterns("__pycache__", "*.c"))  # fmt: skip
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    if set(compiled.status().values()) != {"compiled"}:  # not built by make (a bare checkout): build the copy
        for stale in copy.glob("promptwall_otel/**/*.so"):
            stale.unlink()
        environ = {k: v for k, v in os.environ.items() if k != compiled.ENV_PURE_PYTHON}
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=copy, env=environ,
                       check=True, capture_output=True, timeout=900)  # fmt: skip
    return copy


def run_in(checkout: Path, code: str, **environ: str) -> Dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != compiled.ENV_PURE_PYTHON}
    env.update(environ, PYTHONPATH=str(checkout))
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_listed_module_is_a_source_file_of_the_package() -> None:
    for module in compiled.MODULES + compiled.ACCELERATORS:
        assert compiled.source_path(module).is_file(), module
    assert all(compiled.source_path(module).suffix == ".pyx" for module in compiled.ACCELERATORS)
    assert "promptwall_otel.compiled" not in compiled.MODULES  # it must run before anything is built


def test_compiled_and_pure_python_map_every_capture_to_the_same_records(built: Path) -> None:
    fast = run_in(built, MAP_CAPTURES)
    pure = run_in(built, MAP_CAPTURES, **{compiled.ENV_PURE_PYTHON: "1"})
    assert set(fast["status"].values()) == {"compiled"}, fast["status"]  # type: ignore[union-attr]
    assert all(how.startswith("source") for how in pure["status"].values())  # type: ignore[union-attr]
    assert len(fast["records"]) >= 50  # type: ignore[arg-type]
    assert fast["records"] == pure["records"]


def test_a_compiled_module_whose_source_changed_is_never_imported(built: Path, tmp_path: Path) -> None:
    edited = tmp_path / "checkout"
    shutil.copytree(built, edited, ignore=shutil.ignore_patterns("__pycache__"))
    values = edited / "promptwall_otel" / "mapping" / "values.py"
    values.write_text(values.read_text("utf-8") + "\nEDITED_AFTER_THE_BUILD = True\n", "utf-8")
    found = run_in(edited, "import json\nfrom promptwall_otel import compiled\nfrom promptwall_otel.mapping import "
                           "values, builder\nprint(json.dumps([compiled.status(), values.__file__, builder.__file__, "
                           "values.EDITED_AFTER_THE_BUILD]))")  # fmt: skip
    status, values_file, builder_file, edited_flag = found  # type: ignore[misc]
    assert status["promptwall_otel.mapping.values"].endswith("rebuild)")
    assert values_file.endswith("values.py") and edited_flag is True  # the source runs, edit included
    assert status["promptwall_otel.mapping.builder"] == "compiled" and not builder_file.endswith(".py")


def test_an_accelerator_whose_source_changed_gives_way_to_the_python_path(built: Path, tmp_path: Path) -> None:
    check = ("import json\nfrom promptwall_otel import compiled\nfrom promptwall_otel.receiver import decode\n"
             "try:\n    import promptwall_otel.receiver.wire as wire\n    error = None\n"
             "except ImportError as exc:\n    error = str(exc)\n"
             "views, _ = decode.protobuf_span_views(b'')\n"
             "print(json.dumps([compiled.status()['promptwall_otel.receiver.wire'], decode._wire is not None, error]))")
    assert run_in(built, check) == ["compiled", True, None]
    pure = run_in(built, check, **{compiled.ENV_PURE_PYTHON: "1"})
    assert pure[1] is False and compiled.ENV_PURE_PYTHON in pure[2]  # type: ignore[index,operator]
    edited = tmp_path / "checkout"
    shutil.copytree(built, edited, ignore=shutil.ignore_patterns("__pycache__"))
    wire = edited / "promptwall_otel" / "receiver" / "wire.pyx"
    wire.write_text(wire.read_text("utf-8") + "\n# edited after the build\n", "utf-8")
    status, in_use, error = run_in(edited, check)  # type: ignore[misc]
    assert status.endswith("rebuild)") and in_use is False and "rebuild" in error


def test_doctor_says_how_the_per_span_modules_run(built: Path) -> None:
    code = "import json\nfrom promptwall_otel.doctor import speed\nprint(json.dumps(speed().text))"
    listed = len(compiled.MODULES + compiled.ACCELERATORS)
    assert run_in(built, code) == f"per-span modules: all {listed} compiled"
    pure = run_in(built, code, **{compiled.ENV_PURE_PYTHON: "1"})
    assert f"{listed} of {listed} run as pure Python" in pure  # type: ignore[operator]
    assert compiled.ENV_PURE_PYTHON in pure  # type: ignore[operator]
