"""The console's HTTP contract, without a browser: login, cookie, headers, scoping, keyless mode."""

from __future__ import annotations

import time

from typing import Iterator

import httpx
import pytest

from promptwall_otel.backend import LocalBackend
from promptwall_otel.backend.console import LOGIN_FAILURES_PER_MINUTE, LoginThrottle
from promptwall_otel.backend.process import CONSOLE_PREFIX

KEY = "pw_console_http_key"


@pytest.fixture(scope="module")
def keyed() -> Iterator[LocalBackend]:
    with LocalBackend(api_keys=[f"shop={KEY}"]) as backend:
        yield backend


def _login(url: str, key: str, **headers: str) -> httpx.Response:
    return httpx.post(url + "/login", data={"key": key, "next": "/billing"}, headers=headers)


def test_serve_prints_the_console_address(keyed: LocalBackend) -> None:
    deadline = time.monotonic() + 10  # printed right after the ready line, which is all start() waits for
    while not any(line.startswith(CONSOLE_PREFIX + keyed.url + "/") for line in keyed.output):
        assert time.monotonic() < deadline, keyed.output
        time.sleep(0.05)


def test_pages_need_a_session_and_send_a_strict_policy(keyed: LocalBackend) -> None:
    for path in ("/", "/observability", "/traces?model=x", "/traces/some-id", "/sessions", "/sessions/s", "/billing"):
        reply = httpx.get(keyed.url + path)
        assert reply.status_code == 303, path
        assert reply.headers["location"].startswith("/login?next="), path
    page = httpx.get(keyed.url + "/login")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"


def test_login_sets_an_opaque_strict_cookie_and_keeps_no_key(keyed: LocalBackend) -> None:
    assert _login(keyed.url, "wrong").status_code == 401
    assert _login(keyed.url, "").status_code == 401, "keys are configured: no keyless login"
    reply = _login(keyed.url, KEY)
    assert reply.status_code == 303 and reply.headers["location"] == "/billing"
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and KEY not in cookie
    session = cookie.split(";")[0].split("=", 1)[1]
    page = httpx.get(keyed.url + "/billing", cookies={"pw_console": session})
    assert page.status_code == 200 and "shop" in page.text and KEY not in page.text
    assert httpx.get(keyed.url + "/billing", cookies={"pw_console": session + "x"}).status_code == 303


def test_next_never_leaves_the_site(keyed: LocalBackend) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        reply = httpx.post(keyed.url + "/login", data={"key": KEY, "next": target})
        assert reply.headers["location"] == "/observability", target


def test_a_foreign_page_cannot_post_the_forms(keyed: LocalBackend) -> None:
    reply = _login(keyed.url, KEY, Origin="http://evil.example")
    assert reply.status_code == 403 and "set-cookie" not in reply.headers


def test_no_keys_configured_logs_in_without_a_key() -> None:
    with LocalBackend() as backend:
        reply = httpx.post(backend.url + "/v1/events", json={"request_id": "open-1", "prompt": "p", "total_tokens": 5},
                           headers={"X-API-Key": "anything"})  # fmt: skip
        assert reply.status_code == 200
        login = _login(backend.url, "")
        assert login.status_code == 303
        session = login.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        page = httpx.get(backend.url + "/traces/open-1", cookies={"pw_console": session})
        assert page.status_code == 200 and "open-1" in page.text


def test_wrong_keys_are_throttled_per_address() -> None:
    """Ten wrong keys a minute from one address; then 429 with Retry-After, even for the right key."""
    with LocalBackend(api_keys=[f"shop={KEY}"]) as backend:
        for attempt in range(LOGIN_FAILURES_PER_MINUTE):
            assert _login(backend.url, f"guess-{attempt}").status_code == 401, attempt
        refused = _login(backend.url, "guess-again")
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
        assert "try again" in refused.text and "guess-again" not in refused.text
        assert _login(backend.url, KEY).status_code == 429, "the right key waits too: no oracle for a guesser"
        # Another address (127.0.0.2 is loopback too) is not held up by this one's failures.
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
            reply = other.post(backend.url + "/login", data={"key": KEY, "next": "/billing"})
        assert reply.status_code == 303


def test_throttle_forgets_failures_after_a_minute_and_bounds_addresses() -> None:
    now = [1000.0]
    throttle = LoginThrottle(limit=3, window_s=60, max_addresses=2, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("a") is None
        throttle.failed("a")
        now[0] += 10
    assert throttle.retry_after("a") == 30  # the first failure (t=1000) leaves the window at t=1060
    now[0] = 1060.5
    assert throttle.retry_after("a") is None
    throttle.failed("b")
    throttle.failed("c")
    throttle.failed("d")
    assert len(throttle._failures) == 2 and "b" not in throttle._failures
