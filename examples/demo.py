"""The `make demo` walk-through on the embedded default: no account needed.

Starts the local PromptWall-compatible backend on a free port, sends a few
events exactly as PromptWall's Events-mode guide does (prompt, answer, model,
tokens, user, session, metadata), then reads them back with
``promptwall-otel events`` and ``promptwall-otel billing`` and stops.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

from promptwall_otel.backend import LocalBackend

API_KEY = "pk_local_demo"

CONVERSATION = [
    ("What is the capital of France?", "Paris is the capital of France.", 8, 6),
    ("And its population?", "About 2.1 million people live in Paris proper.", 12, 11),
    ("Thanks!", "You're welcome.", 3, 3),
]


def send_events(url: str) -> None:
    session_id = f"conv-{uuid.uuid4().hex[:8]}"
    events = [
        {
            "request_id": f"demo-{uuid.uuid4().hex}",
            "prompt": prompt,
            "answer": answer,
            "model": "gpt-4o-mini",
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "user_id": "user-42",
            "session_id": session_id,
            "metadata": {"feature": "faq-bot", "tier": "free"},
        }
        for prompt, answer, prompt_tokens, completion_tokens in CONVERSATION
    ]
    events.append(
        {
            "request_id": f"demo-{uuid.uuid4().hex}",
            "prompt": "Summarise this PDF.",
            "answer": "It is a quarterly report; revenue grew 4%.",
            "model": "claude-sonnet-4-5",
            "prompt_tokens": 1200,
            "completion_tokens": 90,
            "user_id": "user-7",
            "metadata": {"feature": "summarize-pdf", "tier": "enterprise"},
        }
    )
    with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=10) as client:
        for event in events:  # one call per interaction, as the Events-mode guide shows
            response = client.post("/v1/events", json=event)
            response.raise_for_status()
        replay = client.post("/v1/events", json={"events": events})  # a retry: stored once
        print(f"sent {len(events)} events; re-sending them all: {replay.json()['skipped']} skipped as duplicates\n")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, LocalBackend(db=str(Path(tmp) / "demo.db"), api_keys=[API_KEY]) as backend:
        print(f"local PromptWall-compatible backend at {backend.url}\n")
        send_events(backend.url)
        cli = [sys.executable, "-m", "promptwall_otel"]
        read_args = ["--url", backend.url, "--api-key", API_KEY]
        print("$ promptwall-otel events")
        subprocess.run([*cli, "events", *read_args], check=True)
        print("\n$ promptwall-otel billing")
        subprocess.run([*cli, "billing", *read_args], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
