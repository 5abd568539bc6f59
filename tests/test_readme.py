"""The README's commands are true: every ``promptwall-otel`` line in its shell blocks parses with today's CLI,
and the read commands run against a real backend as written (with ``--url`` pointing at it)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import List

import httpx

from promptwall_otel.backend import LocalBackend
from promptwall_otel.cli import build_parser
from tests.conftest import API_KEY, ROOT


def readme_commands() -> List[List[str]]:
    """The arguments of each ``promptwall-otel`` command in the README's ```sh blocks (placeholders dropped)."""
    text = (ROOT / "README.md").read_text()
    commands: List[List[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if "promptwall-otel " not in line or line.startswith("pip "):
                continue
            words = shlex.split(line.split("promptwall-otel ", 1)[1])
            commands.append([word for word in words if not (word.startswith("[") and word.endswith("]"))])
    return commands


def test_the_readme_has_commands_to_check() -> None:
    names = {command[0] for command in readme_commands()}
    assert {"serve", "events", "sessions", "billing", "doctor", "receive", "dev"} <= names, names


def test_every_readme_command_parses() -> None:
    parser = build_parser()
    for command in readme_commands():
        parser.parse_args(command)  # an unknown option or command exits 2 here


def test_the_read_commands_run_as_written(backend: LocalBackend) -> None:
    event = {"request_id": "readme-1", "model": "gpt-4o-mini", "session_id": "S", "prompt_tokens": 3,
             "metadata": {"tier": "gold"}}  # fmt: skip
    assert httpx.post(backend.url + "/v1/events", json=event, headers={"X-API-Key": API_KEY}).status_code == 200
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWALL_")}
    environ.update(PYTHONPATH=str(ROOT), PROMPTWALL_API_KEY=API_KEY)
    ran = 0
    for command in readme_commands():
        if command[0] not in ("events", "sessions", "billing"):
            continue
        done = subprocess.run([sys.executable, "-m", "promptwall_otel", *command, "--url", backend.url], env=environ,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, (command, done.stderr)
        ran += 1
        if "--json" in command:
            assert '"request_id": "readme-1"' in done.stdout or '"request_id":"readme-1"' in done.stdout
    assert ran >= 4


def test_one_python_floor_everywhere() -> None:
    """The README, pyproject.toml and the Makefile name the same minimum Python, and this run satisfies it."""
    readme = re.search(r"Python (3\.\d+)\+", (ROOT / "README.md").read_text())
    pyproject = re.search(r'requires-python = ">=(3\.\d+)"', (ROOT / "pyproject.toml").read_text())
    makefile = re.search(r"sys.version_info >= \(3, (\d+)\)", (ROOT / "Makefile").read_text())
    assert readme and pyproject and makefile
    assert readme.group(1) == pyproject.group(1) == f"3.{makefile.group(1)}"
    assert sys.version_info >= (3, int(makefile.group(1)))


def test_the_configuration_table_states_the_defaults_in_the_code() -> None:
    from promptwall_otel import config
    from promptwall_otel.mapping.options import DEFAULT_MAX_CONTENT_BYTES, DEFAULT_MAX_MESSAGES_BYTES
    from promptwall_otel.mapping.options import DEFAULT_MAX_RUN_SECONDS, DEFAULT_MAX_RUN_STEPS
    from promptwall_otel.transport.encoding import DEFAULT_MAX_BATCH_BYTES
    from promptwall_otel.transport.worker import DEFAULT_MAX_ATTEMPTS

    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`PROMPTWALL_"):
            rows[cells[1].strip("`")] = cells[2].strip("`")
    expected = {
        "PROMPTWALL_BASE_URL": config.DEFAULT_BASE_URL,
        "PROMPTWALL_MAX_ATTEMPTS": str(DEFAULT_MAX_ATTEMPTS),
        "PROMPTWALL_MAX_BATCH_BYTES": str(DEFAULT_MAX_BATCH_BYTES),
        "PROMPTWALL_SPOOL_MAX_BYTES": str(config.DEFAULT_SPOOL_MAX_BYTES),
        "PROMPTWALL_MAX_QUEUE_BYTES": str(config.DEFAULT_MAX_QUEUE_BYTES),
        "PROMPTWALL_MAX_CONTENT_BYTES": str(DEFAULT_MAX_CONTENT_BYTES),
        "PROMPTWALL_MAX_MESSAGES_BYTES": str(DEFAULT_MAX_MESSAGES_BYTES),
        "PROMPTWALL_GROUP_AGENT_RUNS": "false",
        "PROMPTWALL_RUN_MAX_STEPS": str(DEFAULT_MAX_RUN_STEPS),
        "PROMPTWALL_RUN_MAX_SECONDS": str(DEFAULT_MAX_RUN_SECONDS),
    }
    assert {name: rows.get(name) for name in expected} == expected
