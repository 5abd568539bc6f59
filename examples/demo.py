"""The `make demo` walk-through on the embedded default: no account, no LLM bill.

Starts the local PromptWall-compatible backend and the fake OpenAI-compatible
server shipped in examples/fake_llm, then runs three real instrumented apps
against them, unchanged, as a user would (after one event sent by hand, the
way PromptWall's Events-mode guide does):

  (a) examples/code_path.py     promptwall_otel.configure() + the official OpenAI instrumentation
  (b) examples/zero_code_app.py no OpenTelemetry code at all, run under opentelemetry-instrument
  (c) examples/conversation.py  a multi-turn conversation with a session id and a user id

and prints what PromptWall received: the events, the session replay and the bill.
At a terminal it then leaves the backend and its web console running until Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "fake_llm"))

from server import start_fake_llm  # noqa: E402  (examples/fake_llm/server.py)

from promptwall_otel.backend import LocalBackend  # noqa: E402

API_KEY = "pk_local_demo"


def run(title: str, command: list, env: dict) -> None:
    shown = " ".join(Path(part).name if Path(part).is_file() else part for part in command)
    print(f"\n=== {title}\n$ {shown}")
    subprocess.run(command, env=env, check=True)


def keep_running(url: str) -> None:
    """At a terminal, leave the backend and its console up until Ctrl-C (without one, e.g. in tests, return)."""
    print(f"""
=== the backend keeps running: look around, then Ctrl-C to stop (its database is deleted then)
console:  {url}/   (log in with the demo key {API_KEY})
your app: PROMPTWALL_BASE_URL={url} PROMPTWALL_API_KEY={API_KEY} python your_app.py""", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print()


def main() -> int:
    llm, llm_url = start_fake_llm()
    with tempfile.TemporaryDirectory() as tmp, LocalBackend(db=str(Path(tmp) / "demo.db"), api_keys=[API_KEY]) as backend:
        print(f"local PromptWall-compatible backend: {backend.url}\nfake OpenAI-compatible LLM server:  {llm_url}")
        env = dict(os.environ, PROMPTWALL_API_KEY=API_KEY, PROMPTWALL_BASE_URL=backend.url,
                   PROMPTWALL_SPOOL_DIR=str(Path(tmp) / "spool"), OPENAI_BASE_URL=llm_url + "/v1",
                   OPENAI_API_KEY="sk-fake", OTEL_METRICS_EXPORTER="none",
                   DEMO_CONVERSATION_ID="conv-lisbon-weekend")  # fmt: skip
        python = sys.executable
        run("events mode by hand, as PromptWall's guide shows", [python, str(HERE / "events_mode.py")], env)
        run("(a) code path", [python, str(HERE / "code_path.py")], env)
        zero_env = dict(env, OTEL_SERVICE_NAME="faq-bot", OTEL_TRACES_EXPORTER="promptwall",
                        OTEL_LOGS_EXPORTER="promptwall", OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")  # fmt: skip
        instrument = str(Path(python).parent / "opentelemetry-instrument")
        run("(b) zero code", [instrument, python, str(HERE / "zero_code_app.py")], zero_env)
        run("(c) conversation with a session and a user", [python, str(HERE / "conversation.py")], env)

        cli = [python, "-m", "promptwall_otel"]
        read = ["--url", backend.url, "--api-key", API_KEY]
        run("what PromptWall received", [*cli, "events", *read], env)
        run("the conversation, replayed", [*cli, "sessions", "conv-lisbon-weekend", *read], env)
        run("the bill", [*cli, "billing", *read], env)
        if sys.stdin.isatty() and sys.stdout.isatty():
            keep_running(backend.url)
    llm.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
