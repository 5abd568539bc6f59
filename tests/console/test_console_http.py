"""The console's HTTP contract, without a browser: login, cookie, headers, scoping, keyless mode."""

from __future__ import annotations

import time

from typing import Iterator

import httpx
import pytest

from promptwall_otel.backend import LocalBackend
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
