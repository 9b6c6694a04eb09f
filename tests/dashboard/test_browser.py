"""The dashboard in a real headless Chromium: live rows, filters, the story, DSNs, faults."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from harness.world import World
from tests.dashboard.conftest import screenshot

pytestmark = pytest.mark.slow


def _by():  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    return By


def wait_for(driver: Any, condition: Any, timeout: float = 10) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(d: Any) -> Any:
        try:
            return condition(d)
        except WebDriverException as exc:
            # Chromium's way of saying stale: the node was replaced by a live update between
            # finding it and reading it. Look again.
            if "does not belong to the document" in str(exc):
                return False
            raise

    # Controls reload the page: an element found just before the reload goes stale.
    return WebDriverWait(
        driver, timeout, ignored_exceptions=[StaleElementReferenceException]
    ).until(attempt)


def live(driver: Any) -> None:
    """Wait until the page's event stream is open."""
    wait_for(driver, lambda d: d.find_element(_by().ID, "live-state").text == "live")


def post_bounce(world: World, address: str, event: str = "hardbounce") -> httpx.Response:
    return httpx.post(
        world.clevertap.urls.bounce,
        json=[{"event": event, "data": [{"e": address, "ts": int(time.time())}]}],
        timeout=10,
    )


def test_page_loads_with_the_journal(world: World, browser: Any) -> None:
    browser.get(world.clevertap.url + "/")
    assert browser.title.startswith("Live")
    live(browser)
    text = browser.find_element(_by().ID, "entries").text
    # The mail world's records are there, newest first: the DSN, the replies, the message.
    for seen in ("smtp_reply", "smtp_message", "dsn", "452", "CT303"):
        assert seen in text
    seqs = [
        int(r.get_attribute("id")[1:])
        for r in browser.find_elements(_by().CSS_SELECTOR, "#entries tr")
    ]
    assert seqs == sorted(seqs, reverse=True)
    screenshot(browser, "live")


def test_callback_appears_live_without_reload(world: World, browser: Any) -> None:
    browser.get(world.clevertap.url + "/")
    live(browser)
    browser.execute_script("window.stayed = 'same page'")
    response = post_bounce(world, "live@example.com")
    assert response.status_code == 200
    seq = world.journal.last_seq
    row = wait_for(browser, lambda d: d.find_elements(_by().ID, f"e{seq}"))[0]
    assert "hardbounce live@example.com" in row.text
    assert "→ 200" in row.text
    # Inserted at the top by the stream: the page was not reloaded.
    assert browser.execute_script("return window.stayed") == "same page"
    assert browser.find_element(_by().CSS_SELECTOR, "#entries tr").get_attribute("id") == f"e{seq}"


def test_filter_by_recipient(world: World, browser: Any) -> None:
    post_bounce(world, "other@example.com")
    browser.get(world.clevertap.url + "/")
    field = browser.find_element(_by().ID, "filter-address")
    field.send_keys("Late@Example.com")  # any case: addresses match case-insensitively
    field.submit()
    wait_for(browser, lambda d: "address=" in d.current_url)
    live(browser)
    rows = browser.find_elements(_by().CSS_SELECTOR, "#entries tr")
    assert rows
    kinds = {r.get_attribute("class").split()[0] for r in rows}
    # Its reply, its message, its DSN and its callback; nothing about anyone else.
    assert {"k-smtp_reply", "k-smtp_message", "k-dsn", "k-callback"} <= kinds
    assert all("late@example.com" in r.text for r in rows)
    assert "other@example.com" not in browser.find_element(_by().ID, "entries").text
    # Live rows obey the filter too: another recipient's callback stays out, this one comes in.
    post_bounce(world, "other@example.com")
    post_bounce(world, "late@example.com", "softbounce")
    seq = world.journal.last_seq
    wait_for(browser, lambda d: d.find_elements(_by().ID, f"e{seq}"))
    assert not browser.find_elements(_by().ID, f"e{seq - 1}")
    screenshot(browser, "filter")


def test_open_a_dsn_from_the_story(world: World, browser: Any) -> None:
    browser.get(world.clevertap.url + "/recipient/late@example.com")
    story = browser.find_element(_by().TAG_NAME, "main").text
    assert "X-CleverTap_META: eyJ3enJrX2FjY3QiOiJURVNULTEifQ==" in story
    assert "CT303" in story
    # The violating path of the payload is highlighted, and its code links to the check.
    mark = browser.find_element(_by().CSS_SELECTOR, "pre.payload mark")
    assert mark.text == "1700000000123"
    assert mark.get_attribute("title") == "$[0].data[0].ts"
    screenshot(browser, "story")
    browser.find_element(_by().CSS_SELECTOR, "a.dsn-link").click()
    wait_for(browser, lambda d: "/entry/" in d.current_url)
    table = browser.find_element(_by().ID, "dsn").text
    assert "postfix" in table
    recipients = browser.find_element(_by().TAG_NAME, "main").text
    assert "late@example.com failed 5.1.1" in recipients
    # Rendered and raw: the DSN as it went into the Maildir intake.
    raw = browser.find_element(_by().ID, "dsn-raw").text
    assert "multipart/report" in raw
    assert "Final-Recipient: rfc822; late@example.com" in raw
    screenshot(browser, "dsn")


def test_violation_links_to_its_check(world: World, browser: Any) -> None:
    browser.get(world.clevertap.url + "/recipient/late@example.com")
    browser.find_element(_by().CSS_SELECTOR, "ul.violations a.code").click()
    wait_for(browser, lambda d: d.current_url.endswith("/checks#CT303"))
    section = browser.find_element(_by().ID, "CT303")
    assert "ts is in milliseconds" in section.text


def test_switch_a_fault_and_see_the_next_callback_answered_with_it(
    world: World, browser: Any
) -> None:
    from selenium.webdriver.support.ui import Select

    try:
        browser.get(world.clevertap.url + "/")
        Select(browser.find_element(_by().ID, "fault-action")).select_by_value("status")
        status = browser.find_element(_by().ID, "fault-status")
        status.clear()
        status.send_keys("503")
        browser.find_element(_by().ID, "fault-first").send_keys("1")
        browser.find_element(_by().ID, "fault-set").click()
        wait_for(browser, lambda d: "503,first=1" in d.find_element(_by().ID, "faults-now").text)
        live(browser)
        response = post_bounce(world, "faulted@example.com")
        assert response.status_code == 503
        seq = world.journal.last_seq
        row = wait_for(browser, lambda d: d.find_elements(_by().ID, f"e{seq}"))[0]
        assert "→ 503 [fault 503,first=1]" in row.text
        # first=1: the resend gets through.
        assert post_bounce(world, "faulted@example.com").status_code == 200
        # The rule's counters follow the callbacks live.
        wait_for(
            browser,
            lambda d: "(seen 2, applied 1)" in d.find_element(_by().ID, "faults-now").text,
        )
        screenshot(browser, "fault")
        browser.find_element(_by().ID, "fault-clear").click()
        wait_for(
            browser, lambda d: d.find_element(_by().ID, "faults-now").text == "Faults now: none"
        )
    finally:
        world.clevertap.set_faults()


def test_session_transcript_and_message(world: World, browser: Any) -> None:
    browser.get(world.clevertap.url + "/?kind=smtp_message")
    browser.find_element(_by().CSS_SELECTOR, "#entries tr td.num a").click()
    wait_for(browser, lambda d: "/entry/" in d.current_url)
    main = browser.find_element(_by().TAG_NAME, "main").text
    assert "November news" in main
    assert "Hello from the dashboard test." in main
    eml = browser.find_element(_by().ID, "eml").get_attribute("href")
    raw = httpx.get(eml, timeout=10)
    assert raw.headers["content-type"].startswith("message/rfc822")
    assert b"Subject: November news" in raw.content
    screenshot(browser, "message")
    browser.find_element(_by().PARTIAL_LINK_TEXT, "session").click()
    wait_for(browser, lambda d: "/session/" in d.current_url)
    transcript = browser.find_element(_by().CSS_SELECTOR, "pre.transcript").text
    assert "C: RCPT TO:<full@example.com>" in transcript
    assert "452" in transcript
    screenshot(browser, "session")


def test_usable_from_the_keyboard(world: World, browser: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.get(world.clevertap.url + "/")
    body = browser.find_element(_by().TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    active = browser.switch_to.active_element
    assert active.text == "Skip to content"
    active.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    # The recipient search works from the keyboard alone.
    field = browser.find_element(_by().ID, "find-recipient")
    field.send_keys("ok@example.com", Keys.ENTER)
    wait_for(browser, lambda d: "/recipient/ok@example.com" in d.current_url)
    assert browser.find_element(_by().ID, "story-address").text == "ok@example.com"


def test_reset_from_the_page(world: World, browser: Any) -> None:
    browser.get(world.clevertap.url + "/")
    assert browser.find_elements(_by().CSS_SELECTOR, "#entries tr")
    last = world.journal.last_seq
    browser.find_element(_by().ID, "reset").click()
    browser.switch_to.alert.accept()  # "Forget every journal entry?"
    wait_for(browser, lambda d: d.find_elements(_by().ID, "empty"))
    assert world.journal.count() == 0
    # Numbering goes on after a reset: the next entry is newer than any before it.
    live(browser)
    post_bounce(world, "after-reset@example.com")
    assert world.journal.last_seq > last
    wait_for(browser, lambda d: d.find_elements(_by().ID, f"e{world.journal.last_seq}"))
    assert not browser.find_elements(_by().ID, "empty")


def test_with_a_token_the_browser_logs_in_and_everything_works(browser: Any) -> None:
    from harness.clevertap.server import CleverTapServer
    from harness.clevertap.settings import ServerSettings

    with CleverTapServer(ServerSettings(token="s3cret")) as ct:
        browser.delete_all_cookies()
        browser.get(ct.url + "/?kind=callback")
        wait_for(browser, lambda d: "/login" in d.current_url)
        field = browser.find_element(_by().ID, "token")
        field.send_keys("s3cret")
        field.submit()
        wait_for(browser, lambda d: d.current_url.endswith("/?kind=callback"))
        live(browser)  # the stream accepted the cookie
        # The controls send the token to the control API as a Bearer header.
        browser.find_element(_by().ID, "fault-set").click()
        wait_for(browser, lambda d: "503" in d.find_element(_by().ID, "faults-now").text)
        live(browser)
        response = httpx.post(
            ct.urls.bounce,
            json=[
                {"event": "hardbounce", "data": [{"e": "t@example.com", "ts": int(time.time())}]}
            ],
            timeout=10,
        )
        assert response.status_code == 503
        seq = ct.journal.last_seq
        row = wait_for(browser, lambda d: d.find_elements(_by().ID, f"e{seq}"))[0]
        assert "→ 503" in row.text


def _refused(address: tuple[str, int]) -> bool:
    import socket

    try:
        with socket.create_connection(address, timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_take_a_host_down_and_bring_it_up_from_the_page(world: World, browser: Any) -> None:
    import smtplib

    from selenium.webdriver.support.ui import Select

    host = world.mail.hosts["example.com"]
    address = (host.bind, host.port)
    try:
        browser.get(world.clevertap.url + "/")
        live(browser)
        row = browser.find_element(_by().ID, "host-example.com")
        assert row.find_element(_by().CSS_SELECTOR, ".host-state").text == "up"
        Select(row.find_element(_by().CSS_SELECTOR, "[data-host-variant]")).select_by_value(
            "refused"
        )
        row.find_element(_by().CSS_SELECTOR, "[data-host-down]").click()
        wait_for(
            browser,
            lambda d: (
                d.find_element(_by().CSS_SELECTOR, "#host-example\\.com .host-state").text
                == "refused (switched at run time)"
            ),
        )
        # Really down: the port refuses connections (the listener closes in the host's loop).
        deadline = time.monotonic() + 5
        while not _refused(address):
            assert time.monotonic() < deadline, "example.com still accepts connections"
            time.sleep(0.05)
        live(browser)
        # Switched from elsewhere (the control API), the page follows live: its row comes in
        # and the host's state cell changes without a reload.
        browser.execute_script("window.stayed = 'same page'")
        answer = httpx.post(world.clevertap.urls.control + "/hosts/example.com/up", json={})
        assert answer.status_code == 200
        seq = world.journal.last_seq
        change = wait_for(browser, lambda d: d.find_elements(_by().ID, f"e{seq}"))[0]
        assert "host example.com up (refused)" in change.text
        wait_for(
            browser,
            lambda d: (
                d.find_element(_by().CSS_SELECTOR, "#host-example\\.com .host-state").text == "up"
            ),
        )
        assert browser.execute_script("return window.stayed") == "same page"
        # Down again from the page with another variant, then up from the page.
        browser.find_element(_by().CSS_SELECTOR, "#host-example\\.com [data-host-down]")
        Select(
            browser.find_element(_by().CSS_SELECTOR, "#host-example\\.com [data-host-variant]")
        ).select_by_value("greeting_421")
        browser.find_element(_by().CSS_SELECTOR, "#host-example\\.com [data-host-down]").click()
        wait_for(
            browser,
            lambda d: (
                d.find_element(_by().CSS_SELECTOR, "#host-example\\.com .host-state").text
                == "greeting_421 (switched at run time)"
            ),
        )
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP(*address, timeout=5)
        assert refused.value.smtp_code == 421
        screenshot(browser, "hosts")
        browser.find_element(_by().CSS_SELECTOR, "#host-example\\.com [data-host-up]").click()
        wait_for(
            browser,
            lambda d: (
                d.find_element(_by().CSS_SELECTOR, "#host-example\\.com .host-state").text == "up"
            ),
        )
        with smtplib.SMTP(*address, timeout=5) as smtp:
            assert smtp.noop()[0] == 250
    finally:
        if host.drifted:
            world.up("example.com")


def test_the_report_page_is_the_terminal_report(world: World, browser: Any) -> None:
    import re

    from harness.scenario.judge import judge
    from harness.scenario.judge_cli import window
    from harness.scenario.model import Scenario
    from harness.scenario.report import render_text

    # A run of its own: from here on, one legacy hardbounce with a millisecond ts (CT303, an
    # error), so the run fails on it.
    since = world.journal.last_seq
    response = httpx.post(
        world.clevertap.urls.bounce,
        json=[{"event": "hardbounce", "data": [{"e": "ok@example.com", "ts": 1_700_000_000_123}]}],
        timeout=10,
    )
    assert response.status_code == 400
    browser.get(world.clevertap.url + "/")
    browser.find_element(_by().LINK_TEXT, "Report").click()
    wait_for(browser, lambda d: d.current_url.endswith("/report"))
    field = browser.find_element(_by().ID, "report-since")
    field.clear()
    field.send_keys(str(since))
    field.submit()
    wait_for(browser, lambda d: d.current_url.endswith(f"/report?since={since}"))
    shown = browser.find_element(_by().ID, "report").text
    assert browser.find_element(_by().ID, "verdict").text == "FAIL"
    assert "FAIL dashboard" in shown
    assert "CT303" in shown
    scenario = world.clevertap.app.scenario
    assert isinstance(scenario, Scenario)
    printed = render_text(judge(scenario, world.journal, started=window(world.journal, since)))

    def words(text: str) -> list[str]:
        # The same words in the same order; table rules and the run's duration (judged a
        # moment apart) aside.
        text = re.sub(r"\d+\.\d s,", "", text)
        return [w for w in text.split() if not set(w) <= set("+-|=─━│")]

    assert words(shown) == words(printed)
    screenshot(browser, "report")


def test_the_api_docs_render_from_local_assets(world: World, browser: Any) -> None:
    # Swagger UI and ReDoc are the server's own files: they render with nothing fetched from
    # elsewhere (ReDoc's bundle links a CDN logo: the page's policy blocks it, status 0).
    def fetched_elsewhere() -> list[str]:
        entries = browser.execute_script(
            "return performance.getEntriesByType('resource')"
            ".map(e => [e.name, e.responseStatus, e.transferSize])"
        )
        assert any(name.startswith(world.clevertap.url) for name, _, _ in entries)
        return [
            name
            for name, status, size in entries
            if not name.startswith(world.clevertap.url) and (status or size)
        ]

    browser.get(world.clevertap.url + "/docs")
    blocks = wait_for(browser, lambda d: d.find_elements(_by().CSS_SELECTOR, ".opblock-summary"))
    shown = " ".join(b.text for b in blocks)
    for path in ("/callbacks/bounce", "/callbacks/v2", "/_harness/messages", "/_harness/hosts"):
        assert path in shown, path
    assert fetched_elsewhere() == []
    browser.get(world.clevertap.url + "/redoc")
    wait_for(
        browser, lambda d: "Legacy bounce callback" in d.find_element(_by().TAG_NAME, "body").text
    )
    assert fetched_elsewhere() == []
