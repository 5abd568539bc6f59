"""Agent runs to Promptetheus: one record (a run) becomes a trace and its events, idempotently.

A record here is one encoded run, ``{"trace": {id, agent, project_id,
user_goal}, "events": [...]}``, made by :mod:`promptwall_otel.promptetheus`.
:meth:`PromptetheusClient.send` delivers a batch of runs and answers with the
same :class:`~.http.Answer` as ``/v1/events``, so the one
:class:`~.worker.SendingWorker` (backoff, spool, splitting, dead letters)
serves both targets unchanged.

Invariants: sending a run twice changes nothing (the trace's second create is
a 409, which means "already there", and every event carries a deterministic
``idempotency_key``), so a retry, a spool replay or the worker's canary probe
never doubles an event. An answer that is not about one run (no answer, 5xx,
429, a wrong key or URL) is about the whole batch, which is then kept and
sent again whole.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence
from urllib.parse import quote

import httpx

from ..version import __version__
from .http import Answer, Verdict, exchange

# Answers about the runs sent (201 created, 409 already there, 207 some events refused, 400/422 refused).
_DECIDED = frozenset({200, 201, 204, 207, 400, 409, 422})
MAX_EVENTS_PER_REQUEST = 500
MAX_REQUEST_BYTES = 4 * 1024 * 1024


class _Stop(Exception):
    """An answer that ends the whole batch's attempt (kept and retried whole, or split if too large)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.detail)
        self.answer = answer


class PromptetheusClient:
    """A pooled client for one Promptetheus base URL and key (sent as ``Authorization: Bearer``, never shown)."""

    target = "Promptetheus"
    endpoint_kind = "Promptetheus traces"

    def __init__(self, base_url: str, api_key: Optional[str], timeout_s: float = 10.0,
                 headers: Optional[Mapping[str, str]] = None) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.endpoint = self.base_url + "/api/traces"
        self.has_key = bool(api_key)
        base_headers = {"Content-Type": "application/json", "User-Agent": f"promptwall-otel/{__version__}"}
        base_headers.update(headers or {})
        if api_key:
            base_headers["Authorization"] = f"Bearer {api_key}"

        def make() -> httpx.Client:
            return httpx.Client(headers=base_headers, timeout=timeout_s, trust_env=True)

        self._make = make
        self._client = make()

    def __repr__(self) -> str:
        return f"PromptetheusClient(endpoint={self.endpoint!r}, api_key={'<set>' if self.has_key else '<missing>'})"

    def after_fork(self) -> None:
        self._client = self._make()

    def close(self) -> None:
        self._client.close()

    def answers(self) -> Answer:
        """Whether the service is up and takes the key, without writing: a one-trace listing."""
        answer = self._request("GET", self.endpoint + "?limit=1", None)
        if answer.verdict is Verdict.MISCONFIGURED and answer.status is not None:
            return answer._replace(verdict=Verdict.DELIVERED)  # it answered: up, whatever it thinks of reads
        return answer

    def send(self, lines: Sequence[bytes]) -> Answer:
        """Deliver each run (create its trace, append its events); one Answer for the batch."""
        accepted = skipped = 0
        rejected: List[Dict[str, Any]] = []
        try:
            for index, line in enumerate(lines):
                try:
                    run = json.loads(line)
                    trace = run["trace"]
                    trace["id"]
                except (ValueError, TypeError, KeyError) as exc:  # not a run we made: refuse it, keep the others
                    rejected.append({"index": index, "request_id": None, "error": f"not a run record ({exc!r})"[:200]})
                    continue
                fresh, error = self._create(trace, several=len(lines) > 1)
                if error is None:
                    new, error = self._append(trace["id"], run.get("events") or [], several=len(lines) > 1)
                    fresh = fresh or new > 0
                if error is not None:
                    rejected.append({"index": index, "request_id": trace.get("id"), "error": error})
                elif fresh:
                    accepted += 1
                else:
                    skipped += 1
        except _Stop as stop:
            return stop.answer
        status = 200 if not rejected else 207 if accepted + skipped else 400
        body = {"accepted": accepted, "skipped": skipped, "rejected": rejected}
        return Answer(Verdict.DELIVERED, status, body, None, f"{len(lines)} runs")

    def _create(self, trace: Dict[str, Any], several: bool) -> "tuple[bool, Optional[str]]":
        answer = self._request("POST", self.endpoint, json.dumps(trace).encode())
        if answer.status in (200, 201):
            return True, None
        if answer.status == 409:  # already there: a retry or a replay
            return False, None
        return False, self._refusal(answer, several)

    def _append(self, trace_id: str, events: List[Dict[str, Any]], several: bool) -> "tuple[int, Optional[str]]":
        url = f"{self.endpoint}/{quote(str(trace_id), safe='')}/events"
        new = 0
        errors: List[str] = []
        for chunk in _chunks(events):
            answer = self._request("POST", url, chunk)
            if answer.status in (200, 207) or (answer.status == 400 and _rejected(answer)):
                body = answer.body or {}
                new += body.get("accepted", 0) if isinstance(body.get("accepted"), int) else 0
                errors += [f"{item.get('idempotency_key')}: {item.get('error')}" for item in _rejected(answer)[:5]]
                continue
            error = self._refusal(answer, several)
            if error is not None:
                errors.append(error)
        return new, ("; ".join(errors) if errors else None)

    def _refusal(self, answer: Answer, several: bool) -> Optional[str]:
        """A 4xx about this run alone becomes its reason; anything else stops the batch."""
        if answer.verdict is Verdict.TOO_LARGE and several:
            raise _Stop(answer)
        if answer.status is not None and 400 <= answer.status < 500 and answer.status not in (401, 403, 404, 429):
            reason = (answer.body or {}).get("error") if isinstance(answer.body, dict) else None
            return f"HTTP {answer.status}: {reason or 'refused'}"[:300]
        raise _Stop(answer)

    def _request(self, method: str, url: str, content: Optional[bytes]) -> Answer:
        label = f" from {method} {url[len(self.base_url):].split('?')[0]}"
        return exchange(self._client, method, url, content, _DECIDED, label)


def _rejected(answer: Answer) -> List[Dict[str, Any]]:
    items = (answer.body or {}).get("rejected")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _chunks(events: List[Dict[str, Any]]) -> List[bytes]:
    """Request bodies of at most 500 events and about 4 MiB each (an event larger alone travels alone)."""
    bodies: List[bytes] = []
    current: List[bytes] = []
    size = 0
    for event in events:
        encoded = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
        if current and (len(current) >= MAX_EVENTS_PER_REQUEST or size + len(encoded) > MAX_REQUEST_BYTES):
            bodies.append(b'{"events":[' + b",".join(current) + b"]}")
            current, size = [], 0
        current.append(encoded)
        size += len(encoded) + 1
    if current:
        bodies.append(b'{"events":[' + b",".join(current) + b"]}")
    return bodies
