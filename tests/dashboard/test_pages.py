"""The dashboard over real HTTP (no browser): the token rule, the event stream, errors."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.records import Dsn, DsnRecipient
from harness.vocab import MailReport


@pytest.fixture(scope="module")
def server() -> Iterator[CleverTapServer]:
    with CleverTapServer() as ct:
        yield ct


@pytest.fixture
def ct(server: CleverTapServer) -> CleverTapServer:
    server.set_faults()
    server.reset()
    return server


def bounce(ct: CleverTapServer, address: str) -> httpx.Response:
    return httpx.post(
        ct.urls.bounce,
        json=[{"event": "hardbounce", "data": [{"e": address, "ts": 1_700_000_000}]}],
        timeout=10,
    )


def read_events(
    url: str, count: int, headers: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """The first *count* events of a stream, each as its fields (id, event, data)."""
    found: list[dict[str, str]] = []
    current: dict[str, str] = {}
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    found.append(current)
                    if len(found) == count:
                        return found
                current = {}
                continue
            name, _, value = line.partition(": ")
            current[name] = value
    return found


def test_the_stream_catches_up_then_follows(ct: CleverTapServer) -> None:
    first = bounce(ct, "a@example.com")
    assert first.status_code == 200
    ct.set_faults()  # a `faults` entry: not a callback
    since = ct.journal.last_seq - 2
    url = f"{ct.url}/_harness/events?since={since}&kind=callback"
    # Sent while the stream is open (whether before or after it subscribed: `since` decides).
    later = threading.Timer(0.3, bounce, (ct, "b@example.com"))
    later.start()
    try:
        events = read_events(url, 2)
    finally:
        later.join()
    assert [e["event"] for e in events] == ["entry", "entry"]
    data = [json.loads(e["data"]) for e in events]
    assert [d["kind"] for d in data] == ["callback", "callback"]
    assert [e["id"] for e in events] == [str(d["seq"]) for d in data]
    assert "hardbounce a@example.com" in data[0]["html"]
    assert "hardbounce b@example.com" in data[1]["html"]


def test_the_stream_resumes_after_last_event_id(ct: CleverTapServer) -> None:
    bounce(ct, "one@example.com")
    bounce(ct, "two@example.com")
    first = ct.journal.last_seq - 1
    url = f"{ct.url}/_harness/events?since=0"
    # A reconnecting EventSource sends the last id it saw; only newer entries come back.
    events = read_events(url, 1, headers={"Last-Event-ID": str(first)})
    assert json.loads(events[0]["data"])["seq"] == first + 1
    assert "two@example.com" in events[0]["data"]


def test_the_stream_filters_by_recipient(ct: CleverTapServer) -> None:
    since = ct.journal.last_seq
    bounce(ct, "other@example.com")
    bounce(ct, "Wanted@Example.com")
    events = read_events(f"{ct.url}/_harness/events?since={since}&address=wanted@example.com", 1)
    assert "Wanted@Example.com" in events[0]["data"]


def test_missing_and_wrong(ct: CleverTapServer) -> None:
    assert httpx.get(f"{ct.url}/entry/999999").status_code == 404
    bad = httpx.get(f"{ct.url}/?kind=<b>nonsense</b>")
    assert bad.status_code == 400
    assert "unknown kind '<b>nonsense</b>'" in bad.text
    assert bad.headers["content-type"].startswith("text/plain")  # never markup from a query
    bounce(ct, "a@example.com")
    eml = httpx.get(f"{ct.url}/entry/{ct.journal.last_seq}/message.eml")
    assert eml.status_code == 404
    assert "is not a message" in eml.text


def test_assets_are_served_from_the_package(ct: CleverTapServer) -> None:
    page = httpx.get(ct.url + "/").text
    assert 'src="http' not in page  # no CDN: works offline
    assert 'href="http' not in page
    for asset in ("/static/dashboard/dashboard.js", "/static/dashboard/dashboard.css"):
        response = httpx.get(ct.url + asset)
        assert response.status_code == 200
        assert len(response.content) > 500


def test_checks_page_has_a_stable_anchor_per_code(ct: CleverTapServer) -> None:
    from harness.checks import all_checks

    page = httpx.get(ct.url + "/checks").text
    for check in all_checks():
        assert f'id="{check.code}"' in page


def test_the_token_rule() -> None:
    with CleverTapServer(ServerSettings(token="s3cret")) as ct, httpx.Client() as client:
        page = client.get(ct.url + "/?kind=callback", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/%3Fkind%3Dcallback"
        stream = client.get(ct.url + "/_harness/events")
        assert stream.status_code == 401
        assert "token" in stream.json()["detail"]
        wrong = client.post(ct.url + "/login", data={"token": "guess", "next": "/"})
        assert wrong.status_code == 401
        assert "not the token" in wrong.text
        assert client.get(ct.url + "/", follow_redirects=False).status_code == 303
        # Never an open redirect, even with the right token.
        right = client.post(
            ct.url + "/login", data={"token": "s3cret", "next": "//elsewhere.test/"}
        )
        assert right.status_code == 303
        assert right.headers["location"] == "/"
        assert "httponly" in right.headers["set-cookie"].lower()
        assert "samesite=strict" in right.headers["set-cookie"].lower()
        # The cookie opens the pages; the page hands the token to its script for the control API.
        shown = client.get(ct.url + "/")
        assert shown.status_code == 200
        assert 'data-token="s3cret"' in shown.text
    with CleverTapServer(ServerSettings(token="s3cret")) as ct:
        bounce(ct, "a@example.com")
        events = read_events(
            ct.url + "/_harness/events?since=0", 1, headers={"Authorization": "Bearer s3cret"}
        )
        assert "a@example.com" in events[0]["data"]


def test_harness_serve_prints_the_dashboard_url() -> None:
    """The real command: its banner names the dashboard, and the page is there."""
    with subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        _read_banner_and_page(process)


def _read_banner_and_page(process: subprocess.Popen[str]) -> None:
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            if line.strip().startswith("dashboard"):
                url = line.split()[1]
                break
        assert url is not None, "no dashboard line in the banner"
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200
        assert '<h1 id="journal-h">Journal</h1>' in page.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


@pytest.mark.asyncio
async def test_a_client_that_stops_reading_is_told_to_reload() -> None:
    """The stream keeps a bounded queue per client; past it, a gap, and the stream ends."""
    from harness.clevertap.app import create_app
    from harness.dashboard.reads import Filter
    from harness.dashboard.routes import _BACKLOG, _stream
    from harness.records import Note

    app = create_app()
    stream = _stream(app, Filter(), since=0)
    assert await anext(stream) == "retry: 2000\n\n"  # subscribed now
    # Caught up (nothing yet) and waiting for new entries when the flood comes.
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.2)
    assert not first.done()
    for i in range(_BACKLOG * 10 + 1):
        app.journal.append(Note(source="test", what=str(i)))
    # Nothing more is queued for it: the page reloads and reads the journal instead.
    assert await first == "event: gap\ndata: {}\n\n"
    assert [chunk async for chunk in stream] == []


def test_the_story_of_an_address_with_a_slash(ct: CleverTapServer) -> None:
    bounce(ct, "a/b@example.com")  # a legal local part
    page = httpx.get(ct.url + "/recipient/a%2Fb@example.com", timeout=10)
    assert page.status_code == 200
    assert '<span id="story-address">a/b@example.com</span>' in page.text
    assert "hardbounce a/b@example.com" in page.text


def test_without_a_scenario_there_is_no_report_and_no_hosts(ct: CleverTapServer) -> None:
    report = httpx.get(ct.url + "/report", timeout=10)
    assert report.status_code == 404
    assert "started without one (harness serve SCENARIO has one)" in report.text
    page = httpx.get(ct.url + "/", timeout=10).text
    assert 'href="/report"' not in page
    assert "hosts-now" not in page
    assert httpx.get(ct.url + "/fragment/hosts", timeout=10).text.strip() == ""


def test_a_callback_to_a_wrong_path_shows_on_the_page(ct: CleverTapServer) -> None:
    body = [{"event": "hardbounce", "data": [{"e": "a@example.com", "ts": 1_700_000_000}]}]
    assert httpx.post(ct.url + "/callbacks/bounc", json=body, timeout=10).status_code == 404
    page = httpx.get(ct.url + "/?kind=callback", timeout=10).text
    assert "POST /callbacks/bounc → 404: no callback endpoint at this path" in page
    entry = httpx.get(f"{ct.url}/entry/{ct.journal.last_seq}", timeout=10).text
    assert "a@example.com" in entry  # the body as it came


def test_an_auto_reply_and_a_complaint_are_shown_as_what_they_are(ct: CleverTapServer) -> None:
    for report, style, title, row in [
        (MailReport.COMPLAINT, "fraud", "Complaint to", "feedback type"),
        (MailReport.AUTO_REPLY, "exchange", "Auto-reply to", "style"),
    ]:
        entry = ct.journal.append(
            Dsn(
                to="bounces+a=example.com@gateway.test",
                recipients=(DsnRecipient(recipient="a@example.com"),),
                ok=True,
                dialect="",
                report=report,
                style=style,
            )
        )
        page = httpx.get(f"{ct.url}/entry/{entry.seq}", timeout=10)
        assert page.status_code == 200
        assert f"{title} bounces+a=example.com@gateway.test" in page.text
        assert f'<th scope="row">{row}</th><td>{style}</td>' in page.text
        assert ">dialect<" not in page.text
