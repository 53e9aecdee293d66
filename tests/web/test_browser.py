"""The web UI end to end in Debian's chromium, driven by Playwright, against a real uvicorn.

The served model (`tests/server/_served.py`) blocks on named gates the test opens over HTTP, so
"while it streams" is a deterministic moment. Screenshots go to `test-artifacts/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server._client import Server, serve

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve() as srv:
        yield srv


@pytest.fixture
def page(server: Server) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        yield page
        context.close()
        browser.close()


def control(server: Server, method: str, path: str, **kwargs: object) -> None:
    httpx.request(method, f"{server.url}/_test{path}", timeout=30, **kwargs).raise_for_status()  # type: ignore[arg-type]


def test_chat_streams_stops_continues_and_rejoins_after_reload(
    server: Server, page: object
) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto(server.url)
    expect(page.get_by_role("heading", name="How can I help?")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-0-empty.png"))
    box = page.get_by_role("textbox", name="Message")
    assistant = page.locator("article.msg-assistant")

    # 1. Tokens stream in: the first two arrive while the model is still mid-answer.
    control(server, "POST", "/script", json={"turns": [["Hel", "lo", "@gate:b1", " world"]]})
    box.fill("Say hello")
    box.press("Enter")
    expect(page.locator("article.msg-user").last).to_have_text("Say hello")
    expect(assistant.last.locator(".text")).to_have_text("Hello")
    expect(assistant.last).to_have_class(re.compile(r"\bstreaming\b"))
    expect(page.get_by_role("button", name="Stop generating")).to_be_visible()
    expect(page.locator("#run-status")).to_have_text("Generating…")
    control(server, "GET", "/gates/b1/reached")
    page.screenshot(path=str(ARTIFACTS / "ui-1-streaming.png"))

    # 2. Stop: the partial answer stays, marked stopped, with Continue offered.
    page.get_by_role("button", name="Stop generating").click()
    expect(assistant.last.locator(".stopped-marker")).to_be_visible()
    expect(assistant.last.locator(".text")).to_have_text("Hello")
    expect(assistant.last).to_have_attribute("data-status", "stopped")
    expect(page.get_by_role("button", name="Continue the stopped answer")).to_be_visible()
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    expect(page.locator(".thread-item .busy-dot")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "ui-2-stopped.png"))

    # 3. A follow-up: the model (an echo) sees the partial answer and its status.
    box.fill("go on")
    page.keyboard.press("Enter")
    expect(assistant.last.locator(".text")).to_have_text(
        "You said: go on. Before that I said: Hello (stopped)."
    )
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    expect(page.locator(".thread-item").first).to_have_text("Say hello")
    page.screenshot(path=str(ARTIFACTS / "ui-3-follow-up.png"))

    # 4. Reload mid-stream: the page re-joins the run after the last event it had shown.
    control(server, "POST", "/script", json={"turns": [["Par", "tial", "@gate:b2", " end."]]})
    box.fill("Once more")
    box.press("Enter")
    expect(assistant.last.locator(".text")).to_have_text("Partial")
    control(server, "GET", "/gates/b2/reached")
    joins: list[dict[str, str]] = []
    page.on(
        "request",
        lambda r: joins.append(r.headers) if re.search(r"/runs/[^/]+/stream$", r.url) else None,
    )
    page.reload()
    expect(assistant.last.locator(".text")).to_have_text("Partial")
    expect(page.get_by_role("button", name="Stop generating")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-4-rejoined.png"))
    control(server, "POST", "/gates/b2/release")
    expect(assistant.last.locator(".text")).to_have_text("Partial end.")
    expect(assistant.last).not_to_have_attribute("data-status", "stopped")
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    assert joins
    assert int(joins[0]["last-event-id"]) > 0  # resumed after a seq, not from scratch
    assert page.locator("article.msg-assistant .text", has_text="Partial").count() == 1
    expect(page.locator(".thread-item .busy-dot")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "ui-5-finished.png"))


def test_dark_mode_and_keyboard_stop(server: Server, page: object) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.emulate_media(color_scheme="dark")
    page.goto(server.url)
    control(server, "POST", "/script", json={"turns": [["Thinking", " hard", "@gate:k1", "!"]]})
    box = page.get_by_role("textbox", name="Message")
    box.fill("Escape test")
    box.press("Enter")
    assistant = page.locator("article.msg-assistant")
    expect(assistant.last.locator(".text")).to_have_text("Thinking hard")
    control(server, "GET", "/gates/k1/reached")
    page.keyboard.press("Escape")
    expect(assistant.last.locator(".stopped-marker")).to_be_visible()
    expect(page.get_by_role("button", name="Continue the stopped answer")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui-6-dark-stopped.png"))


def test_tool_cards_show_live_status_and_continue_resumes(server: Server, page: object) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto(server.url)
    box = page.get_by_role("textbox", name="Message")
    assistant = page.locator("article.msg-assistant")
    card = page.locator(".tool-card").last

    # A tool call: its card shows "running" while the tool works, "cancelled" after Stop.
    turn = ["Let me look that up.", '@tool:lookup:{"query": "tether"}']
    control(server, "POST", "/script", json={"turns": [turn]})
    box.fill("What is tether?")
    box.press("Enter")
    expect(card).to_have_attribute("data-status", "running")
    expect(card.locator(".tool-name")).to_have_text("lookup")
    page.screenshot(path=str(ARTIFACTS / "ui-7-tool-running.png"))
    page.get_by_role("button", name="Stop generating").click()
    expect(card).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_role("button", name="Send message")).to_be_visible()

    # The tool finishing: "done", with its result in the card.
    control(server, "POST", "/gates/tool/release")
    turns = [['@tool:lookup:{"query": "stop buttons"}'], ["Found it."]]
    control(server, "POST", "/script", json={"turns": turns})
    box.fill("Try again")
    box.press("Enter")
    expect(assistant.last.locator(".text")).to_have_text("Found it.")
    expect(card).to_have_attribute("data-status", "done")
    card.locator("summary").click()
    expect(card.locator(".tool-result")).to_have_text("found: stop buttons")
    page.screenshot(path=str(ARTIFACTS / "ui-8-tool-done.png"))

    # Continue: a stopped answer is resumed in place.
    control(server, "POST", "/script", json={"turns": [["Once upon", "@gate:c1", " never"]]})
    box.fill("Tell me a story")
    box.press("Enter")
    expect(assistant.last.locator(".text")).to_have_text("Once upon")
    control(server, "GET", "/gates/c1/reached")
    page.keyboard.press("Escape")
    expect(page.get_by_role("button", name="Continue the stopped answer")).to_be_visible()
    control(server, "POST", "/script", json={"turns": [[" a time", ", the end."]]})
    page.get_by_role("button", name="Continue the stopped answer").click()
    expect(assistant.last.locator(".text")).to_have_text("Once upon a time, the end.")
    expect(assistant.last).to_have_attribute("data-status", "complete")
    expect(page.locator(".stopped-marker")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "ui-9-continued.png"))


def test_approval_card_approves_and_rejects_a_tool_call(server: Server, page: object) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto(server.url)
    box = page.get_by_role("textbox", name="Message")
    assistant = page.locator("article.msg-assistant")
    approval = page.get_by_role("group", name="Tool approval")
    tool_card = page.locator(".tool-card").last

    # The run pauses before `send`: the card names the call; nothing ran yet.
    control(server, "POST", "/script", json={"turns": [['@tool:send:{"to": "ada"}'], ["Sent."]]})
    box.fill("Message Ada")
    box.press("Enter")
    expect(approval).to_be_visible()
    expect(approval.locator(".tool-name")).to_have_text("send")
    expect(approval.locator(".tool-args")).to_contain_text('"to": "ada"')
    expect(tool_card).to_have_attribute("data-status", "awaiting approval")
    page.screenshot(path=str(ARTIFACTS / "ui-10-approval.png"))

    # Approve: the call runs, the answer follows, the card goes away.
    approval.get_by_role("button", name="Approve").click()
    expect(assistant.last.locator(".text")).to_have_text("Sent.")
    expect(approval).to_have_count(0)
    expect(tool_card).to_have_attribute("data-status", "done")
    tool_card.locator("summary").click()
    expect(tool_card.locator(".tool-result")).to_have_text("sent to ada")

    # Reject: the call never runs; the model is told the user said no.
    control(server, "POST", "/script", json={"turns": [['@tool:send:{"to": "bob"}'], ["OK."]]})
    box.fill("Message Bob")
    box.press("Enter")
    expect(approval).to_be_visible()
    expect(approval.locator(".tool-args")).to_contain_text('"to": "bob"')
    approval.get_by_role("button", name="Reject").click()
    expect(assistant.last.locator(".text")).to_have_text("OK.")
    expect(approval).to_have_count(0)
    expect(tool_card).to_have_attribute("data-status", "rejected")
    tool_card.locator("summary").click()
    expect(tool_card.locator(".tool-result")).to_contain_text("Rejected")
    page.screenshot(path=str(ARTIFACTS / "ui-11-rejected.png"))


def test_api_key_is_asked_for_and_used() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    with (
        serve(env={"TETHER_TEST_API_KEYS": "key-alice-123"}) as srv,
        playwright_api.sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(srv.url)
        expect(page.get_by_role("dialog", name="API key needed")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "ui-10-api-key.png"))
        page.get_by_role("textbox", name="API key").fill("key-alice-123")
        page.get_by_role("button", name="Save").click()
        box = page.get_by_role("textbox", name="Message")
        box.fill("hello with a key")
        box.press("Enter")
        answer = page.locator("article.msg-assistant .text").last
        expect(answer).to_have_text("You said: hello with a key.")
        expect(page.locator(".thread-item")).to_have_count(1)
        browser.close()


def test_a_thread_whose_id_needs_percent_encoding_opens(server: Server, page: object) -> None:
    from urllib.parse import quote

    from playwright.sync_api import Page

    assert isinstance(page, Page)
    thread_id = "日本 100% sure?"  # non-ASCII, a space, a percent sign and a question mark
    r = httpx.post(
        f"{server.url}/threads/{quote(thread_id, safe='')}/runs/wait",
        json={"input": {"messages": [{"role": "user", "content": "encoded hello"}]}},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    page.goto(f"{server.url}/threads/{quote(thread_id, safe='')}/view")
    expect(page.locator("article.msg-user").last).to_contain_text("encoded hello")
    expect(page.locator("article.msg-assistant").last).to_contain_text("You said: encoded hello.")
    # Clicking it in the thread list opens it too (the hash round-trips).
    page.goto(server.url)
    page.locator(f'[data-thread-id="{thread_id}"]').click()
    expect(page.locator("article.msg-user").last).to_contain_text("encoded hello")
