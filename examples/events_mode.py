"""Events mode by hand: what PromptWall's Events-mode guide shows, against any /v1/events.

No OpenTelemetry here: one POST per interaction with prompt, answer, model,
tokens, user, session and metadata. Needs PROMPTWALL_API_KEY and
PROMPTWALL_BASE_URL (the demo points them at the local backend).
"""

import os
import uuid

import httpx

base_url = os.environ["PROMPTWALL_BASE_URL"].rstrip("/")
headers = {"X-API-Key": os.environ["PROMPTWALL_API_KEY"]}

event = {
    "request_id": f"events-mode-{uuid.uuid4().hex}",
    "prompt": "What is the capital of France?",
    "answer": "Paris is the capital of France.",
    "model": "gpt-4o-mini",
    "prompt_tokens": 8,
    "completion_tokens": 6,
    "user_id": "user-42",
    "session_id": "faq-session-1",
    "metadata": {"feature": "faq-bot", "tier": "free"},
}
first = httpx.post(f"{base_url}/v1/events", json=event, headers=headers, timeout=10)
again = httpx.post(f"{base_url}/v1/events", json=event, headers=headers, timeout=10)  # a retry: stored once
print(f"events mode: HTTP {first.status_code} {first.json()}; the retry: skipped={again.json()['skipped']}")
