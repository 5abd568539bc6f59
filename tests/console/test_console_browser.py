"""The local console in a real, headless Chromium against a real backend fed by the real exporter.

An instrumented app (tests/apps/llm_app.py, against the fake LLM) sends App
``alpha``'s events; App ``beta`` gets one event of its own, and ``alpha`` one
whose prompt and answer carry script. Each test logs in through the login
form, reads what the pages show, and compares it with what was sent (the
read API is the independent witness). Screenshots of every page go to
test-output/console/.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, TypeVar
from urllib.parse import quote

import httpx
import pytest

from promptwall_otel.backend import LocalBackend
from tests.conftest import ROOT, app_env, run_app, stored_events

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = ROOT / "test-output" / "console"
ALPHA_KEY, BETA_KEY, ADMIN_KEY = "pw_alpha_console_key", "pw_beta_console_key", "pw_admin_console_key"
MODEL = "gpt-4o-mini-2024-07-18"  # what the fake LLM answers for gpt-4o-mini
XSS_PROMPT = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
_T = TypeVar("_T")

pytestmark = pytest.mark.skipif(not Path(CHROMEDRIVER).exists(), reason="needs Debian's chromium-driver (.ci/run installs it)")


@pytest.fixture(scope="module")
def console(fake_llm: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """A backend with Apps alpha and beta and an admin key, alpha's events sent by the instrumented app."""
    with LocalBackend(api_keys=[f"alpha={ALPHA_KEY}", f"beta={BETA_KEY}"], admin_key=ADMIN_KEY) as backend:
        env = app_env(backend.url, fake_llm, str(tmp_path_factory.mktemp("spool")), PROMPTWALL_API_KEY=ALPHA_KEY)
        result = run_app("code", env, "--calls", "2")
        assert result.returncode == 0, result.stderr
        calls = json.loads(result.stdout.strip().splitlines()[-1])["calls"]
        events = _eventually(lambda: _all_of(backend.url, ALPHA_KEY, len(calls)))
        for key, event in ((BETA_KEY, {"request_id": "beta-only-1", "prompt": "beta's secret prompt", "model": "beta-model",
                                       "provider": "beta-provider", "prompt_tokens": 7, "completion_tokens": 3}),
                           (ALPHA_KEY, {"request_id": "xss-1", "prompt": XSS_PROMPT, "answer": XSS_PROMPT, "model": "xss-model",
                                        "session_id": "xss-session", "prompt_tokens": 1, "completion_tokens": 1})):  # fmt: skip
            reply = httpx.post(backend.url + "/v1/events", json=event, headers={"X-API-Key": key})
            assert reply.status_code == 200, reply.text
        yield {"url": backend.url, "events": events, "calls": calls}


def _all_of(url: str, key: str, n: int) -> List[Dict[str, Any]]:
    events = stored_events(url, key)
    assert len(events) >= n, f"{len(events)} of {n} events stored so far"
    return events


def _eventually(check: Callable[[], _T], timeout: float = 30.0) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, WebDriverException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def login(browser: Any, url: str, key: str, path: str = "/") -> None:
    browser.delete_all_cookies()
    browser.get(url + path)
    assert "/login" in browser.current_url
    field = browser.find_element(By.ID, "key")
    field.send_keys(key)
    field.send_keys(Keys.ENTER)  # the keyboard path: no mouse needed
    _eventually(lambda: _assert("/login" not in browser.current_url, browser.current_url))


def _assert(condition: bool, message: str = "") -> bool:
    assert condition, message
    return True


def shot(browser: Any, name: str) -> None:
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def text(browser: Any, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def _num(value: float) -> str:
    return f"{int(value):,}"


def test_observability_totals_match_what_was_sent(console: Dict[str, Any], browser: Any) -> None:
    url, events = console["url"], console["events"]
    login(browser, url, ALPHA_KEY)
    assert browser.current_url.endswith("/observability")
    assert text(browser, "#app-name") == "alpha"
    bill = httpx.get(url + "/api/console/billing", headers={"X-API-Key": ALPHA_KEY}).json()
    assert bill["events"] == len(console["calls"]) + 1  # the app's calls, once each, plus the script event
    browser.get(url + "/observability?window=all")
    assert text(browser, "#kpi-requests") == _num(bill["events"])
    assert text(browser, "#kpi-tokens") == _num(bill["total_tokens"])
    assert text(browser, "#kpi-credit") == (f"${bill['credit_usd']:,.4f}" if bill["credit_usd"] < 1 else f"${bill['credit_usd']:,.2f}")
    models = {row.find_element(By.CSS_SELECTOR, "td").text for row in browser.find_elements(By.CSS_SELECTOR, "#by-model tbody tr")}
    assert models == {e.get("model") or "(unknown)" for e in events} | {"xss-model"}
    assert len(browser.find_elements(By.CSS_SELECTOR, ".chart svg rect.bar")) > 0
    shot(browser, "observability")


def test_filtered_trace_list_and_one_event(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    login(browser, url, ALPHA_KEY, "/traces?model=" + MODEL)  # a shared filtered link survives the login
    assert "model=" + MODEL in browser.current_url
    expected = stored_events(url, ALPHA_KEY, model=MODEL)
    assert 0 < len(expected) < len(console["events"]), "the filter must select some events, not all"
    rows = browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")
    assert len(rows) == len(expected)
    assert all(row.find_elements(By.CSS_SELECTOR, "td")[1].text == MODEL for row in rows)
    shot(browser, "traces-filtered")

    browser.get(url + "/traces")  # the filter form, by keyboard
    field = browser.find_element(By.NAME, "end_user_id")
    field.send_keys("u-e2e")
    field.send_keys(Keys.ENTER)
    assert "end_user_id=u-e2e" in browser.current_url
    users = [r.find_elements(By.CSS_SELECTOR, "td")[-1].text for r in browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")]
    assert users == ["u-e2e"] * len(stored_events(url, ALPHA_KEY, end_user_id="u-e2e")) and users

    browser.get(url + "/traces?" + "metadata.channel=e2e")
    tagged = stored_events(url, ALPHA_KEY, **{"metadata.channel": "e2e"})
    assert tagged and len(browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")) == len(tagged)

    newest = expected[-1]
    browser.get(url + "/traces?model=" + MODEL)
    browser.find_element(By.CSS_SELECTOR, "#traces tbody tr a").click()
    assert browser.current_url.endswith("/traces/" + quote(newest["request_id"], safe=""))
    assert text(browser, "#request-id") == newest["request_id"]
    assert text(browser, '[data-field="total_tokens"]') == str(newest["total_tokens"])
    assert text(browser, '[data-field="model"]') == MODEL
    assert text(browser, "#prompt") == newest["prompt"]
    assert text(browser, "#answer") == newest["answer"]
    shot(browser, "event")


def test_session_replay_in_order(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    login(browser, url, ALPHA_KEY, "/sessions")
    assert "conv-e2e" in text(browser, "#sessions")
    shot(browser, "sessions")
    browser.find_element(By.LINK_TEXT, "conv-e2e").click()
    turns = httpx.get(url + "/api/console/sessions/conv-e2e", headers={"X-API-Key": ALPHA_KEY}).json()["turns"]
    shown = browser.find_elements(By.CSS_SELECTOR, "#turns .turn")
    assert len(shown) == len(turns)
    for element, turn in zip(shown, turns):
        assert f"{turn['total_tokens']:,} tokens" in element.find_element(By.CSS_SELECTOR, ".meta").text
        assert element.find_element(By.CSS_SELECTOR, ".user pre").text == turn["prompt"]
    shot(browser, "session")


def test_billing_table(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    login(browser, url, ALPHA_KEY, "/billing")
    bill = httpx.get(url + "/api/console/billing", headers={"X-API-Key": ALPHA_KEY}).json()
    assert "$30 per 1,000,000 tokens" in text(browser, "#rate")
    rows = browser.find_elements(By.CSS_SELECTOR, "#billing-by-model tbody tr")
    shown = {r.find_elements(By.CSS_SELECTOR, "td")[0].text: r.find_elements(By.CSS_SELECTOR, "td")[4].text for r in rows}
    assert shown == {row["model"]: _num(row["total_tokens"]) for row in bill["by_model"]}
    assert text(browser, "#bill-tokens") == _num(bill["total_tokens"])
    shot(browser, "billing")


def test_one_app_cannot_see_another(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    login(browser, url, BETA_KEY, "/traces")
    assert text(browser, "#app-name") == "beta"
    rows = browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")
    assert len(rows) == 1 and "beta's secret prompt" in rows[0].text
    alpha_event = console["events"][0]["request_id"]
    browser.get(url + "/traces/" + quote(alpha_event, safe=""))
    assert "No such event" in text(browser, "main")
    browser.get(url + "/sessions/conv-e2e")
    assert "No such session" in text(browser, "main")
    browser.get(url + "/billing")
    assert text(browser, "#bill-events") == "1"
    # And alpha does not see beta's.
    login(browser, url, ALPHA_KEY, "/traces")
    assert "beta's secret prompt" not in text(browser, "main")
    # The admin sees both, each with its App, and can pick one.
    login(browser, url, ADMIN_KEY, "/traces")
    assert "beta's secret prompt" in text(browser, "main") and "alpha" in text(browser, "#traces")
    picker = browser.find_element(By.ID, "app-picker")
    assert [o.text for o in picker.find_elements(By.TAG_NAME, "option")] == ["every App", "alpha", "beta"]
    picker.send_keys("beta")
    picker.submit()
    _eventually(lambda: _assert(len(browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")) <= 2))
    apps_shown = {r.find_elements(By.CSS_SELECTOR, "td")[1].text for r in browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")}
    assert apps_shown == {"beta"}
    shot(browser, "traces-admin-picker")


def test_script_in_an_event_executes_nothing(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    login(browser, url, ALPHA_KEY, "/traces/xss-1")
    assert text(browser, "#prompt") == XSS_PROMPT  # shown as text, exactly
    assert browser.title != "pwned"
    assert not browser.find_elements(By.CSS_SELECTOR, "main img"), "the <img> must not become an element"
    for path in ("/traces", "/sessions/xss-session", "/observability"):
        browser.get(url + path)
        assert browser.title != "pwned"
        assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script")
    shot(browser, "script-event")
    reply = httpx.get(url + "/traces/xss-1")
    assert "script-src 'self'" in reply.headers.get("content-security-policy", "")


def test_new_events_appear_without_reload(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    login(browser, url, BETA_KEY, "/traces")
    marker = browser.execute_script("window.__same_page = true; return true;")
    assert marker
    reply = httpx.post(url + "/v1/events", json={"request_id": "beta-live-1", "prompt": "arrived while watching",
                                                 "model": "beta-model"}, headers={"X-API-Key": BETA_KEY})  # fmt: skip
    assert reply.status_code == 200
    _eventually(lambda: _assert("arrived while watching" in text(browser, "#traces")), timeout=15)
    assert browser.execute_script("return window.__same_page === true;"), "the page must not have reloaded"


def test_login_logout_and_the_cookie(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    browser.delete_all_cookies()
    browser.get(url + "/login")
    field = browser.find_element(By.ID, "key")
    field.send_keys("not-a-key")
    field.send_keys(Keys.ENTER)
    assert "not accepted" in text(browser, ".error")
    shot(browser, "login")
    login(browser, url, ALPHA_KEY)
    cookies = browser.get_cookies()
    assert len(cookies) == 1
    cookie = cookies[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ALPHA_KEY not in cookie["value"] and ALPHA_KEY not in browser.current_url
    assert ALPHA_KEY not in browser.page_source
    browser.find_element(By.CSS_SELECTOR, "form.who button").click()
    _eventually(lambda: _assert("/login" in browser.current_url, browser.current_url))
    assert browser.get_cookies() == [], "logout clears the cookie"
    browser.add_cookie({"name": cookie["name"], "value": cookie["value"], "path": "/"})
    browser.get(url + "/billing")
    assert "/login" in browser.current_url, "logged out: the old session id no longer opens pages"


def test_dark_mode_follows_the_system(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    login(browser, url, ALPHA_KEY, "/observability?window=all")
    light = browser.execute_script("return getComputedStyle(document.body).backgroundColor;")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        browser.get(url + "/observability?window=all")
        dark = browser.execute_script("return getComputedStyle(document.body).backgroundColor;")
        ink = browser.execute_script("return getComputedStyle(document.querySelector('#kpi-requests')).color;")
        shot(browser, "observability-dark")
        browser.get(url + "/traces")
        shot(browser, "traces-dark")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert light != dark
    assert _luminance(dark) < 0.2 < _luminance(ink), (dark, ink)


def _luminance(css_rgb: str) -> float:
    red, green, blue = (int(part) for part in css_rgb[css_rgb.index("(") + 1:].rstrip(")").split(",")[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def test_an_event_shows_its_messages(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    chat = next(e for e in console["events"] if e.get("session_id") == "conv-e2e")
    messages = chat["metadata"]["gen_ai"]["messages"]["input"] + chat["metadata"]["gen_ai"]["messages"]["output"]
    login(browser, url, ALPHA_KEY, "/traces/" + quote(chat["request_id"], safe=""))
    shown = browser.find_elements(By.CSS_SELECTOR, "#messages .message")
    assert [m.find_element(By.CSS_SELECTOR, ".role").text.lower() for m in shown] == [m["role"] for m in messages]  # CSS capitalises
    assert "Be brief." in shown[0].text and "Hello from the e2e test" in text(browser, "#messages")
    assert text(browser, '[data-field="trace_id"]') == chat["metadata"]["otel"]["trace_id"]
    shot(browser, "event-messages")


def test_traces_page_on(console: Dict[str, Any], browser: Any) -> None:
    url = console["url"]
    batch = [{"request_id": f"page-{i:03d}", "prompt": f"paged {i}", "model": "pager", "total_tokens": 1} for i in range(60)]
    reply = httpx.post(url + "/v1/events", json={"events": batch}, headers={"X-API-Key": BETA_KEY})
    assert reply.status_code == 200 and reply.json()["accepted"] == 60
    login(browser, url, BETA_KEY, "/traces?model=pager")
    first = [r.find_elements(By.CSS_SELECTOR, "td")[3].text for r in browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")]
    assert len(first) == 50
    browser.find_element(By.CSS_SELECTOR, "a[rel=next]").click()
    _eventually(lambda: _assert("cursor=" in browser.current_url, browser.current_url))
    prompts = [r.find_elements(By.CSS_SELECTOR, "td")[3].text for r in browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")]
    assert len(prompts) == 10 and not browser.find_elements(By.CSS_SELECTOR, "a[rel=next]")
    assert "model=pager" in browser.current_url, "the filter stays on the next page"
    assert not set(first) & set(prompts) and set(first) | set(prompts) == {f"paged {i}" for i in range(60)}
