"""examples/spa in a real headless Chromium (Debian's chromium and chromium-driver, driven by selenium): log in,
/users/me, refresh with the cookie, two tabs refreshing at the same moment, log out everywhere."""

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from examples.spa.server import build_app
from tests.conftest import PASSWORD
from user_service.config import Settings

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 20
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def site(make_settings: Callable[..., Settings]) -> Iterator[str]:
    """The page and user-service (cookie mode, strict reuse: only the tabs' lock keeps them apart) on one loopback
    origin, served by uvicorn in a thread."""
    settings = make_settings(refresh_token_cookie=True, refresh_token_cookie_secure=False, rate_limit_enabled=False)
    server = uvicorn.Server(uvicorn.Config(build_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive()
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    account = {"namespace": "spa-demo", "username": "alice", "password": PASSWORD}
    assert httpx.post(f"{base}/accounts/auth/register", json=account, timeout=10).status_code == 201
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT_SECONDS)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def status_of(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "status").text)


def wait_for(driver: webdriver.Chrome, condition: Callable[[str], bool]) -> str:
    WebDriverWait(driver, WAIT_SECONDS).until(lambda d: condition(status_of(d)))
    return status_of(driver)


def tab_state(driver: webdriver.Chrome) -> Any:
    return driver.execute_script(
        "return {token: window.userService.state.accessToken, n: window.userService.state.refreshes}"
    )


def test_two_tabs_log_in_refresh_together_and_log_out(site: str, browser: webdriver.Chrome) -> None:
    browser.get(site + "/")
    wait_for(browser, lambda s: s.startswith("logged out"))
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    wait_for(browser, lambda s: s == "logged in")
    assert browser.find_element(By.ID, "who").text == "spa-demo/alice"
    first = browser.current_window_handle

    # A second tab gets its own access token from the cookie, without a password.
    browser.switch_to.new_window("tab")
    browser.get(site + "/")
    wait_for(browser, lambda s: s == "logged in")
    second = browser.current_window_handle

    # Both tabs refresh at the same moment; the lock makes them take turns, so neither is refused as reuse.
    at = int(browser.execute_script("return Date.now()")) + 1500
    before = {}
    for handle in (first, second):
        browser.switch_to.window(handle)
        before[handle] = tab_state(browser)["n"]
        browser.execute_script("window.userService.refreshAt(arguments[0])", at)
    tokens = []
    for handle in (first, second):
        browser.switch_to.window(handle)
        expected = f"refreshed {before[handle] + 1}"
        assert wait_for(browser, lambda s, e=expected: s == e or s.startswith("logged out")) == expected
        tokens.append(tab_state(browser)["token"])
    assert tokens[0] != tokens[1]
    for handle in (first, second):
        browser.switch_to.window(handle)
        browser.find_element(By.ID, "me").click()
        wait_for(browser, lambda s: s == "logged in")
        # One more refresh each, in turn: the session is still open in both tabs.
        browser.find_element(By.ID, "refresh").click()
        expected = f"refreshed {before[handle] + 2}"
        assert wait_for(browser, lambda s, e=expected: s == e or s.startswith("logged out")) == expected

    # Logging out in one tab logs every tab out, and the session is over.
    browser.switch_to.window(first)
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, lambda s: s == "logged out")
    browser.switch_to.window(second)
    wait_for(browser, lambda s: s == "logged out")
    assert browser.execute_script("return document.cookie") == ""
    response = httpx.get(f"{site}/accounts/users/me", headers={"Authorization": f"Bearer {tokens[1]}"}, timeout=10)
    assert response.status_code == 401
