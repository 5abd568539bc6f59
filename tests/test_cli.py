"""The CLI: ordinary mistakes get one line naming what is wrong and the fix (exit 1, never a traceback); events filters."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY, ROOT


def cli(*args: str) -> "subprocess.CompletedProcess[str]":
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWALL_")}
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "promptwall_otel", *args], env=environ, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def one_line_error(done: "subprocess.CompletedProcess[str]") -> str:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_no_backend_running() -> None:
    assert "cannot reach the backend at http://127.0.0.1:9" in one_line_error(cli("events", "--url", "http://127.0.0.1:9"))


def test_a_url_without_a_scheme() -> None:
    assert "needs http:// or https://" in one_line_error(cli("billing", "--url", "127.0.0.1:8787"))


def test_no_key_given(backend: LocalBackend) -> None:
    assert "no key given" in one_line_error(cli("sessions", "--url", backend.url))


def test_a_port_in_use(backend: LocalBackend) -> None:
    port = backend.url.rsplit(":", 1)[1]
    error = one_line_error(cli("serve", "--port", port, "--db", ":memory:"))
    assert f"--port {port}" in error and "already in use" in error


def test_events_filters_and_json(backend: LocalBackend) -> None:
    import httpx

    from tests.conftest import API_KEY

    events = [{"request_id": f"cli-filter-{i}", "model": "m-a" if i % 2 else "m-b", "session_id": "cli-s",
               "prompt_tokens": 1, "metadata": {"tier": "gold" if i < 2 else "free"}} for i in range(4)]  # fmt: skip
    assert httpx.post(backend.url + "/v1/events", json={"events": events}, headers={"X-API-Key": API_KEY}).status_code == 200
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWALL_")}
    environ.update(PYTHONPATH=str(ROOT), PROMPTWALL_API_KEY=API_KEY)
    done = subprocess.run([sys.executable, "-m", "promptwall_otel", "events", "--url", backend.url, "--json",
                           "--model", "m-a", "--metadata", "tier=gold"], env=environ, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    import json

    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert [event["request_id"] for event in found] == ["cli-filter-1"]


def test_serve_says_what_arrives_and_quiet_does_not(tmp_path: object) -> None:
    import httpx

    with LocalBackend(api_keys=["pk-arrivals"]) as loud, LocalBackend(api_keys=["pk-arrivals"],
                                                                      extra_args=["--quiet"]) as quiet:  # fmt: skip
        for backend in (loud, quiet):
            reply = httpx.post(backend.url + "/v1/events", headers={"X-API-Key": "pk-arrivals"}, json={"events": [
                {"request_id": "arrive-1", "model": "gpt-4o-mini"}, {"request_id": "arrive-2", "model": "gpt-4o-mini"}]})
            assert reply.status_code == 200
        deadline = time.monotonic() + 10
        while not any("stored 2 events" in line for line in loud.output):
            assert time.monotonic() < deadline, loud.output
            time.sleep(0.1)
        time.sleep(2.5)
    line = next(line for line in loud.output if "stored 2 events" in line)
    assert "gpt-4o-mini 2" in line and "pk-arrivals" not in line
    assert not any("stored" in line and "events" in line for line in quiet.output)


def _every_parser(parser: "argparse.ArgumentParser") -> "Iterator[argparse.ArgumentParser]":
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _every_parser(child)


def test_every_option_has_help_and_shows_its_default() -> None:
    from promptwall_otel.cli import build_parser

    parsers = list(_every_parser(build_parser()))
    assert len(parsers) >= 12  # the top level, 8 commands, spool's 3 actions
    for parser in parsers:
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{parser.prog} {action.option_strings[0]} has no help"
            if action.default not in (None, False, argparse.SUPPRESS) and not isinstance(action.default, bool):
                assert f"default: {action.default}" in text or f"default {action.default}" in text, (
                    f"{parser.prog} {action.option_strings[0]}: default {action.default!r} not shown")


_WITHOUT_SERVER_EXTRA = """
import sys
class Missing:  # as if only `pip install promptwall-otel` had run: the server extra's modules are not there
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"uvicorn", "httptools", "jinja2", "grpc", "zstandard"} or name.startswith(
                ("google.protobuf", "opentelemetry.proto")):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Missing())
from promptwall_otel.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_cli_without_the_server_extra(backend: LocalBackend) -> None:
    def run(*args: str) -> "subprocess.CompletedProcess[str]":
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWALL_")}
        return subprocess.run([sys.executable, "-c", _WITHOUT_SERVER_EXTRA, *args], capture_output=True, text=True,
                              timeout=60, env={**environ, "PYTHONPATH": str(ROOT)})  # fmt: skip

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("promptwall-otel "), version
    events = run("events", "--url", backend.url, "--api-key", API_KEY, "--json")
    assert events.returncode == 0 and "Traceback" not in events.stderr, events
    doctor = run("doctor", "--no-instrument")
    assert "Traceback" not in doctor.stderr + doctor.stdout and "PROMPTWALL_API_KEY" in doctor.stdout, doctor
    for command in ("serve", "receive", "dev"):
        refused = run(command, "--port" if command == "serve" else "--http", "0" if command == "serve" else "127.0.0.1:0")
        assert refused.returncode == 1 and "pip install 'promptwall-otel[server]'" in refused.stderr, refused
        assert "Traceback" not in refused.stderr, refused.stderr


def test_a_database_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("not a database, " * 200)
    for db in (str(tmp_path / "file-not-folder" / "x.db"), str(not_a_db)):
        if "file-not-folder" in db:
            (tmp_path / "file-not-folder").write_text("a file where the folder should be")
        error = one_line_error(cli("serve", "--port", "0", "--db", db))
        assert "cannot open the database" in error and "--db" in error, error


def test_server_processes_tune_the_interpreter_and_apps_keep_the_defaults() -> None:
    """``receive`` and ``dev`` collect the young generation less often and switch threads sooner
    (webserver.tune_interpreter_for_serving), ``serve`` only the former; importing the package changes
    neither in an app."""
    for receiver, expected in ((True, "(700, 0.005) (10000, 0.001, True)"), (False, "(700, 0.005) (10000, 0.005, True)")):
        probe = ("import gc, sys, promptwall_otel, promptwall_otel.webserver as w; before = (gc.get_threshold()[0], "
                 f"sys.getswitchinterval()); w.tune_interpreter_for_serving(receiver={receiver}); "
                 "print(before, (gc.get_threshold()[0], sys.getswitchinterval(), gc.get_freeze_count() > 0))")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        assert out.strip() == expected
