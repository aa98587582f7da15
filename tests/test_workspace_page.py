"""The workspace's chat page: its JSON endpoints, and a real headless Chromium chatting in it."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from slack_sdk import WebClient

from troupe.devkit.workspace import page
from troupe.devkit.workspace.config import demo_config
from troupe.devkit.workspace.core import WORKSPACE_KEY
from troupe.devkit.workspace.server import build_app, build_workspace
from troupe.devkit.workspace.testing import RunningWorkspace

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 15
HOME = "C0HOME"


# ---- the endpoints, over HTTP -------------------------------------------------------------


@pytest.fixture
async def client() -> Any:
    ws = build_workspace(demo_config())
    app = build_app(ws)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


def control_auth(client: TestClient) -> dict[str, str]:
    """The control token of the client's workspace: random, since the demo sets none."""
    return {"Authorization": f"Bearer {client.server.app[WORKSPACE_KEY].config.control_token}"}


async def test_index_is_served_with_a_self_only_policy(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    html = await resp.text()
    assert 'id="user-picker"' in html and 'id="message-input"' in html
    policy = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    for name in ("app.js", "style.css", "favicon.svg"):
        static = await client.get(f"/static/{name}")
        assert static.status == 200, name


async def test_static_files_load_nothing_from_elsewhere() -> None:
    for path in page.STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)
        assert all(u.startswith("http://www.w3.org/") for u in urls), (path.name, urls)
        assert "@import" not in text and "innerHTML" not in text, path.name


async def test_only_known_static_files_are_served(client: TestClient) -> None:
    for name in ("page.py", "..%2fpage.py", "missing.js", "index.html"):
        resp = await client.get(f"/static/{name}")
        assert resp.status == 404, name


async def test_humans_are_listed_with_tokens_for_loopback(client: TestClient) -> None:
    resp = await client.get("/page/humans")
    assert resp.status == 200
    assert await resp.json() == [
        {"id": "U0ALICE", "name": "alice", "real_name": "Alice", "token": "xoxp-alice"},
        {"id": "U0BOB", "name": "bob", "real_name": "Bob", "token": "xoxp-bob"},
    ]


async def test_humans_are_refused_to_a_foreign_host_name(client: TestClient) -> None:
    resp = await client.get("/page/humans", headers={"Host": "evil.example:80"})
    assert resp.status == 403
    assert await resp.json() == {"ok": False, "error": "invalid_host"}


@pytest.mark.parametrize(
    ("peer", "host", "local"),
    [
        ("127.0.0.1", "127.0.0.1:3000", True),
        ("::1", "[::1]:3000", True),
        ("127.0.0.1", "localhost", True),
        ("192.168.1.20", "192.168.1.5:3000", False),
        ("192.168.1.20", "localhost:3000", False),
        ("127.0.0.1", "rebound.example.com:3000", False),
    ],
)
def test_local_request_needs_a_loopback_peer_and_host(peer: str, host: str, local: bool) -> None:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        (peer, 51000) if key == "peername" else default
    )
    request = make_mocked_request(
        "GET", "/page/humans", headers={"Host": host}, transport=transport
    )
    assert page.is_local_request(request) is local


async def test_devices_are_404_until_published(client: TestClient) -> None:
    resp = await client.get("/page/devices")
    assert resp.status == 404
    auth = control_auth(client)

    lamp = {"id": "kitchen lamp", "name": "kitchen lamp", "room": "kitchen", "state": "on"}
    resp = await client.post("/page/devices", json=lamp, headers=auth)
    assert resp.status == 200
    resp = await client.post("/page/devices", json={"id": "fan", "state": False}, headers=auth)
    assert resp.status == 200
    body = await (await client.get("/page/devices")).json()
    assert body == {"ok": True, "devices": [lamp, {"id": "fan", "state": False}]}

    resp = await client.post("/page/devices", json={"id": "fan", "remove": True}, headers=auth)
    assert [d["id"] for d in (await resp.json())["devices"]] == ["kitchen lamp"]
    resp = await client.post("/page/devices", json={"devices": [{"id": "x"}]}, headers=auth)
    assert (await resp.json())["devices"] == [{"id": "x"}]

    board = page.devices_board(client.server.app)
    board.publish("garage door", {"name": "garage door", "state": "closed"})
    body = await (await client.get("/page/devices")).json()
    assert [d["id"] for d in body["devices"]] == ["x", "garage door"]


async def test_publishing_devices_needs_the_control_token_and_a_good_body(
    client: TestClient,
) -> None:
    resp = await client.post("/page/devices", json={"id": "x"})
    assert resp.status == 401
    assert await resp.json() == {"ok": False, "error": "invalid_auth"}
    auth = control_auth(client)
    bad_bodies: list[Any] = [[1], {"state": "on"}, {"id": True}, {"devices": "x"}, {"devices": [1]}]
    for body in bad_bodies:
        resp = await client.post("/page/devices", json=body, headers=auth)
        assert resp.status == 400, body
        assert await resp.json() == {"ok": False, "error": "invalid_arguments"}
    resp = await client.post("/page/devices", data=b"{not json", headers=auth)
    assert resp.status == 400
    assert await resp.json() == {"ok": False, "error": "invalid_json"}
    assert (await client.get("/page/devices")).status == 404


async def test_scheduled_lists_the_fleets_pinned_schedule_records(client: TestClient) -> None:
    ws = client.server.app[WORKSPACE_KEY]
    assert await (await client.get("/page/scheduled")).json() == {"ok": True, "scheduled": []}
    record = "Schedule 2: every weekday at 07:00 → turn on the kitchen lamp (set by <@U0ALICE>; …)."
    fake = "Schedule 9: every day at 07:00 → open the garage door (set by <@U0BOB>; …)."
    for user, text in (("U0KITCHEN", record), ("U0BOB", fake)):
        message = ws.store.post_message(user=user, channel=HOME, text=text)
        ws.store.pin(user, HOME, message["ts"])  # a person's look-alike pin is no schedule
    body = await (await client.get("/page/scheduled")).json()
    assert body["scheduled"] == [
        {
            "id": 2,
            "when": "every weekday at 07:00",
            "command": "turn on the kitchen lamp",
            "owner": "U0ALICE",
            "channel": "home",
        }
    ]


# ---- a real browser -----------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium; a failure, not a skip, in CI when Chromium is missing."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = (
            "chromium and chromium-driver are needed: apt-get install chromium chromium-driver"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, ignored_exceptions=[StaleElementReferenceException])


FIND_MESSAGE = """
const [pane, needle] = arguments;
const hit = [...document.querySelectorAll(pane + ' .msg')].find(
  (m) => m.querySelector('.text') && m.querySelector('.text').innerText.includes(needle));
return hit ? hit.dataset.ts : null;
"""

PANE_TEXT = "const el = document.querySelector(arguments[0]); return el ? el.innerText : '';"


def _open_as(driver: Any, running: RunningWorkspace, user_id: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(running.url)
    wait = _wait(driver)
    wait.until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#user-picker option[value="{user_id}"]')
    )
    Select(driver.find_element(By.ID, "user-picker")).select_by_value(user_id)
    wait.until(lambda d: d.find_element(By.ID, "channel-name").text == "home")


def _post_from_box(driver: Any, box_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, box_id)
    box.click()
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def test_alice_posts_and_sees_a_bot_reply_in_a_thread(
    workspace: RunningWorkspace, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    _open_as(browser, workspace, "U0ALICE")
    wait = _wait(browser)
    _post_from_box(browser, "message-input", "lights on in the kitchen <please>")

    ts = wait.until(lambda d: d.execute_script(FIND_MESSAGE, "#messages", "kitchen <please>"))
    assert browser.find_element(By.ID, "message-input").get_attribute("value") == ""
    alice = WebClient(token="xoxp-alice", base_url=workspace.api_url)
    posted = alice.conversations_history(channel=HOME)["messages"]
    assert [(m["ts"], m["user"], m["text"]) for m in posted] == [
        (ts, "U0ALICE", "lights on in the kitchen &lt;please&gt;")
    ]

    bot = WebClient(token="xoxb-kitchen", base_url=workspace.api_url)
    reply_text = 'Done for <@U0ALICE>: *kitchen lamp* is on <img src=x onerror="window.pwned=1">'
    bot.chat_postMessage(channel=HOME, text=reply_text, thread_ts=ts)

    parent = f'#messages .msg[data-ts="{ts}"]'
    wait.until(lambda d: d.execute_script(PANE_TEXT, f"{parent} .reply-count") == "1 reply")
    browser.find_element(By.CSS_SELECTOR, f"{parent} .replies").click()
    wait.until(lambda d: d.execute_script(FIND_MESSAGE, "#thread-messages", "is on"))

    thread = browser.find_element(By.ID, "thread-messages")
    assert "Done for @alice: kitchen lamp is on" in thread.text
    assert thread.find_element(By.CSS_SELECTOR, ".text strong").text == "kitchen lamp"
    assert "APP" in thread.text and "kitchen-pi" in thread.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#thread-messages img")
    assert browser.execute_script("return window.pwned === undefined")

    errors = [e for e in browser.get_log("browser") if e["source"] == "javascript"]
    assert errors == []
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 0


def test_thread_reply_from_the_page_and_live_reactions_and_pins(
    workspace: RunningWorkspace, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    bot = WebClient(token="xoxb-kitchen", base_url=workspace.api_url)
    parent_ts = bot.chat_postMessage(channel=HOME, text="Lights are *on* in `kitchen`")["ts"]
    _open_as(browser, workspace, "U0BOB")
    wait = _wait(browser)
    assert wait.until(lambda d: d.execute_script(FIND_MESSAGE, "#messages", "Lights are")) == (
        parent_ts
    )
    parent = f'#messages .msg[data-ts="{parent_ts}"]'
    assert browser.find_element(By.CSS_SELECTOR, f"{parent} .text code").text == "kitchen"

    bot.reactions_add(channel=HOME, timestamp=parent_ts, name="white_check_mark")
    WebClient(token="xoxp-alice", base_url=workspace.api_url).reactions_add(
        channel=HOME, timestamp=parent_ts, name="white_check_mark"
    )
    bot.pins_add(channel=HOME, timestamp=parent_ts)
    count = f'{parent} .reaction[data-name="white_check_mark"] .reaction-count'
    wait.until(lambda d: d.execute_script(PANE_TEXT, count) == "2")
    wait.until(lambda d: d.execute_script(f"return !!document.querySelector('{parent}.pinned')"))
    assert "Pinned" in browser.find_element(By.CSS_SELECTOR, parent).text

    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).move_to_element(browser.find_element(By.CSS_SELECTOR, parent)).perform()
    browser.find_element(By.CSS_SELECTOR, f'{parent} .action[title="Reply in thread"]').click()
    wait.until(lambda d: d.find_element(By.ID, "thread").is_displayed())
    _post_from_box(browser, "thread-input", "thanks, @kitchen-pi")
    wait.until(lambda d: d.execute_script(FIND_MESSAGE, "#thread-messages", "thanks"))
    replies = bot.conversations_replies(channel=HOME, ts=parent_ts)["messages"]
    assert [(m["user"], m["text"]) for m in replies[1:]] == [("U0BOB", "thanks, <@U0KITCHEN>")]
    wait.until(lambda d: d.execute_script(PANE_TEXT, f"{parent} .reply-count") == "1 reply")
    browser.find_element(By.ID, "thread-input").send_keys(Keys.ESCAPE)
    wait.until(lambda d: not d.find_element(By.ID, "thread").is_displayed())

    bot.chat_postMessage(channel="C0KITCHEN", text="someone opened the fridge")
    unread = '#channel-list a.unread[data-channel="C0KITCHEN"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, unread))


def test_edits_deletes_and_links_show_live(workspace: RunningWorkspace, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    bot = WebClient(token="xoxb-kitchen", base_url=workspace.api_url)
    _open_as(browser, workspace, "U0ALICE")
    wait = _wait(browser)
    text = "see <https://example.com/docs|the docs> or <javascript:alert(1)|this> _soon_ ~now~"
    ts = bot.chat_postMessage(channel=HOME, text=text)["ts"]
    gone = bot.chat_postMessage(channel=HOME, text="this one goes away")["ts"]
    wait.until(lambda d: d.execute_script(FIND_MESSAGE, "#messages", "goes away"))
    message = browser.find_element(By.CSS_SELECTOR, f'#messages .msg[data-ts="{ts}"] .text')
    links = message.find_elements(By.TAG_NAME, "a")
    assert [(a.text, a.get_attribute("href")) for a in links] == [
        ("the docs", "https://example.com/docs")
    ]
    assert message.find_element(By.TAG_NAME, "em").text == "soon"
    assert message.find_element(By.TAG_NAME, "del").text == "now"
    assert "javascript:alert(1)|this" in message.text

    bot.chat_update(channel=HOME, ts=ts, text="the docs moved")
    bot.chat_delete(channel=HOME, ts=gone)
    edited = f'#messages .msg[data-ts="{ts}"] .text'
    wait.until(lambda d: d.execute_script(PANE_TEXT, edited) == "the docs moved (edited)")
    wait.until(lambda d: not d.execute_script(FIND_MESSAGE, "#messages", "goes away"))


def test_devices_panel_follows_the_endpoint(workspace: RunningWorkspace, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _open_as(browser, workspace, "U0ALICE")
    assert not browser.find_element(By.ID, "devices").is_displayed()
    req = urllib.request.Request(
        f"{workspace.url}page/devices",
        data=b'{"id": "kitchen lamp", "name": "kitchen lamp", "room": "kitchen", "state": "on"}',
        headers={
            "Authorization": f"Bearer {workspace.workspace.config.control_token}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    except urllib.error.HTTPError as err:  # pragma: no cover - shows the answer on failure
        pytest.fail(f"publishing a device failed: {err.code} {err.read()!r}")
    # The page checks an absent board every 10 s; a reload asks at once.
    browser.refresh()
    wait = _wait(browser)
    wait.until(lambda d: d.find_element(By.ID, "devices").is_displayed())
    wait.until(lambda d: "kitchen lamp" in d.find_element(By.ID, "device-list").text)
    assert browser.find_element(By.CSS_SELECTOR, "#device-list .device-state.on").text == "on"


def test_scheduled_panel_shows_the_fleets_schedules(
    workspace: RunningWorkspace, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    _open_as(browser, workspace, "U0ALICE")
    assert not browser.find_element(By.ID, "scheduled").is_displayed()
    hall = WebClient("xoxb-hall", base_url=workspace.api_url)
    text = "Schedule 1: on 2026-12-01 at sunset → turn on the porch switch (set by <@U0ALICE>; …)."
    posted = hall.chat_postMessage(channel=HOME, text=text)
    hall.pins_add(channel=HOME, timestamp=posted["ts"])
    wait = _wait(browser)
    wait.until(lambda d: d.find_element(By.ID, "scheduled").is_displayed())
    shown = browser.find_element(By.ID, "scheduled-list").text
    assert "1. turn on the porch switch" in shown and "on 2026-12-01 at sunset · #home" in shown


def test_page_remembers_the_chosen_human(workspace: RunningWorkspace, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _open_as(browser, workspace, "U0BOB")
    browser.refresh()
    wait = _wait(browser)
    wait.until(lambda d: d.find_element(By.ID, "channel-name").text == "home")
    picked = browser.execute_script("return document.getElementById('user-picker').value")
    assert picked == "U0BOB"
    _post_from_box(browser, "message-input", "bob was here")
    wait.until(lambda d: d.execute_script(FIND_MESSAGE, "#messages", "bob was here"))
    bob = WebClient(token="xoxp-bob", base_url=workspace.api_url)
    assert bob.conversations_history(channel=HOME)["messages"][0]["user"] == "U0BOB"
    wait.until(lambda d: _rtm_counts(workspace) == {"U0ALICE": 0, "U0BOB": 1})


CONN_STATE = "return document.getElementById('conn').dataset.state"


def _rtm_counts(running: RunningWorkspace) -> dict[str, int]:
    humans = running.control("connections")["humans"]
    return {user: counts["rtm"] for user, counts in humans.items()}


def test_page_polls_while_rtm_is_down_and_reconnects(
    workspace: RunningWorkspace, browser: Any
) -> None:
    _open_as(browser, workspace, "U0ALICE")
    wait = _wait(browser)
    wait.until(lambda d: d.execute_script(CONN_STATE) == "live")
    wait.until(lambda d: _rtm_counts(workspace) == {"U0ALICE": 1, "U0BOB": 0})

    workspace.control("fail", method="rtm.connect", status=503, count=2)
    workspace.control("drop", app="alice")
    wait.until(lambda d: d.execute_script(CONN_STATE) == "polling")
    bot = WebClient(token="xoxb-kitchen", base_url=workspace.api_url)
    bot.chat_postMessage(channel=HOME, text="posted while the socket is down")
    seen_while = wait.until(
        lambda d: (
            d.execute_script(FIND_MESSAGE, "#messages", "socket is down")
            and d.execute_script(CONN_STATE)
        )
    )
    assert seen_while == "polling"

    wait.until(lambda d: d.execute_script(CONN_STATE) == "live")
    calls = workspace.control("counters")["calls"]["U0ALICE"]
    assert calls["rtm.connect"] == 4
    assert calls["conversations.history"] >= 2
    bot.chat_postMessage(channel=HOME, text="posted after the reconnect")
    wait.until(lambda d: d.execute_script(FIND_MESSAGE, "#messages", "after the reconnect"))
    assert _rtm_counts(workspace) == {"U0ALICE": 1, "U0BOB": 0}


AT_BOTTOM = """
const m = document.getElementById('messages');
return m.scrollHeight > m.clientHeight && m.scrollHeight - m.scrollTop - m.clientHeight < 2;
"""


def test_page_scrolls_to_the_newest_message(workspace: RunningWorkspace, browser: Any) -> None:
    alice = WebClient(token="xoxp-alice", base_url=workspace.api_url)
    for n in range(40):
        alice.chat_postMessage(channel=HOME, text=f"message number {n}")
    _open_as(browser, workspace, "U0ALICE")
    wait = _wait(browser)
    wait.until(lambda d: d.execute_script(FIND_MESSAGE, "#messages", "message number 39"))
    wait.until(lambda d: d.execute_script(AT_BOTTOM))

    bot = WebClient(token="xoxb-kitchen", base_url=workspace.api_url)
    bot.chat_postMessage(channel=HOME, text="the newest one")
    wait.until(lambda d: d.execute_script(FIND_MESSAGE, "#messages", "the newest one"))
    wait.until(lambda d: d.execute_script(AT_BOTTOM))
