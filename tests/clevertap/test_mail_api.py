"""The mail side of the control API against a real ``harness serve SCENARIO`` process: real SMTP
in, HTTP out (sessions, messages and their .eml, DSNs, decisions, paging), and hosts taken down
and brought up at run time."""

from __future__ import annotations

import json
import shlex
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

SCENARIO = """\
name: mail-api
mx:
  example.com:
    ok@example.com: accept
    full@example.com: mailbox_full
    late@example.com: {accept_then_bounce: invalid_address, after: 0s, dsn: postfix}
  other.test:
    b@other.test: accept
campaign:
  from: news@brand.test
  to: [ok@example.com, full@example.com, late@example.com, b@other.test]
"""


@dataclass
class Served:
    control: str
    mx: dict[str, tuple[str, int]]


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def send(served: Served, domain: str, to: list[str], subject: str) -> dict[str, Any]:
    host, port = served.mx[domain]
    message = EmailMessage()
    message["From"] = "news@brand.test"
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(f"Body of {subject}.\n")
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        return smtp.send_message(message, from_addr="bounces@brand.test", to_addrs=to)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path = tmp_path_factory.mktemp("mailapi") / "mail-api.yaml"
    path.write_text(SCENARIO)
    # DSNs go to the discard port: nothing listens, so each is journaled as not delivered.
    command = [sys.executable, "-m", "harness", "serve", str(path), "--intake", "127.0.0.1:9"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C to stop"):
                break
        try:
            exports = dict(
                line.removeprefix("export ").split("=", 1)
                for line in lines
                if line.startswith("export ")
            )
            mx_map = json.loads(shlex.split(exports["HARNESS_MX_MAP"])[0])
            control = next(line.split()[1] for line in lines if line.startswith("  control"))
            yield Served(control, {d: _address(a) for d, a in mx_map.items()})
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=20)


@pytest.fixture(scope="module")
def mailed(served: Served) -> Served:
    """One campaign message to example.com's three recipients, then its DSN."""
    refused = send(
        served, "example.com", ["ok@example.com", "full@example.com", "late@example.com"], "News"
    )
    assert set(refused) == {"full@example.com"}
    deadline = time.monotonic() + 10
    while not httpx.get(served.control + "/dsns").json()["entries"]:
        assert time.monotonic() < deadline, "no DSN journaled within 10 s"
        time.sleep(0.05)
    return served


def entries(served: Served, path: str, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(served.control + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["entries"]
    return found


def test_the_mail_side_in_journal_order(mailed: Served) -> None:
    found = entries(mailed, "/mail")
    kinds = [e["kind"] for e in found]
    assert kinds[:5] == ["smtp_open", "smtp_reply", "smtp_reply", "smtp_reply", "smtp_message"]
    assert {"smtp_session", "dsn"} <= set(kinds)
    assert [e["seq"] for e in found] == sorted(e["seq"] for e in found)
    # Filters: kind (repeatable), recipient (any case, every kind), host, code.
    replies = entries(mailed, "/mail", kind=["smtp_reply", "dsn"], recipient="FULL@example.com")
    assert [(e["kind"], e["data"]["code"]) for e in replies] == [("smtp_reply", 452)]
    about_late = entries(mailed, "/mail", recipient="late@example.com")
    assert {e["kind"] for e in about_late} == {"smtp_reply", "smtp_message", "dsn"}
    assert entries(mailed, "/mail", host="other.test") == []


def test_decisions_by_code_class_enhanced_status_and_stage(mailed: Served) -> None:
    full = entries(mailed, "/decisions", code="452")
    assert [(e["data"]["recipient"], e["data"]["mode"]) for e in full] == [
        ("full@example.com", "mailbox_full")
    ]
    assert entries(mailed, "/decisions", code="4xx") == full
    assert entries(mailed, "/decisions", code="4.2.2") == full
    accepted = entries(mailed, "/decisions", code="2xx", stage="rcpt")
    assert [e["data"]["recipient"] for e in accepted] == ["ok@example.com"]
    # Accepted at RCPT with a bounce to come: the `later` stage says so.
    (later,) = entries(mailed, "/decisions", stage="later")
    assert (later["data"]["recipient"], later["data"]["code"]) == ("late@example.com", 250)
    assert entries(mailed, "/decisions", host="other.test") == []


def test_messages_and_their_eml(mailed: Served) -> None:
    (message,) = entries(mailed, "/messages", recipient="ok@example.com")
    data = message["data"]
    assert (data["subject"], data["sender"]) == ("News", "bounces@brand.test")
    assert entries(mailed, "/messages", sender="BOUNCES@brand.test") == [message]
    assert entries(mailed, "/messages", recipient="full@example.com") == []
    raw = httpx.get(f"{mailed.control}/messages/{message['seq']}.eml")
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "message/rfc822"
    assert f'filename="{data["id"]}.eml"' in raw.headers["content-disposition"]
    parsed = message_from_bytes(raw.content)
    assert (parsed["Subject"], parsed.get_payload().strip()) == ("News", "Body of News.")
    # Another kind's seq is no message.
    reply = entries(mailed, "/decisions")[0]["seq"]
    missing = httpx.get(f"{mailed.control}/messages/{reply}.eml")
    assert missing.status_code == 404
    assert "is not an accepted message" in missing.json()["detail"]


def test_sessions_and_one_session(mailed: Served) -> None:
    (session,) = entries(mailed, "/sessions", host="example.com", end="quit")
    data = session["data"]
    assert data["commands"][0].startswith("EHLO")
    assert len(data["messages"]) == 1
    assert entries(mailed, "/sessions", end="timeout") == []
    one = httpx.get(f"{mailed.control}/sessions/{data['session']}").json()
    assert [e["kind"] for e in one["entries"]] == [
        "smtp_open",
        *["smtp_reply"] * 3,
        "smtp_message",
        "smtp_session",
    ]
    missing = httpx.get(f"{mailed.control}/sessions/example.com-999999")
    assert (missing.status_code, missing.json()["detail"]) == (
        404,
        "no SMTP session 'example.com-999999' in the journal",
    )


def test_dsns(mailed: Served) -> None:
    (dsn,) = entries(mailed, "/dsns", recipient="Late@example.com")
    data = dsn["data"]
    assert (data["dialect"], data["recipients"][0]["status"]) == ("postfix", "5.1.1")
    assert data["ok"] is False  # the intake (the discard port) refused it
    assert entries(mailed, "/dsns", code="5.1.1") == [dsn]
    assert entries(mailed, "/dsns", code="4xx") == []


def test_pages_go_forward_without_gaps(mailed: Served) -> None:
    everything = [e["seq"] for e in entries(mailed, "/mail")]
    seen: list[int] = []
    since = 0
    while True:
        page = httpx.get(mailed.control + "/mail", params={"since": since, "limit": 2}).json()
        assert len(page["entries"]) <= 2
        seen += [e["seq"] for e in page["entries"]]
        if page["next"] is None:
            break
        since = page["next"]
    assert seen == everything


@pytest.mark.parametrize(
    "query", [{"limit": 0}, {"limit": 1001}, {"since": -1}, {"kind": "callback"}]
)
def test_bad_filters_get_422_naming_the_field(served: Served, query: dict[str, Any]) -> None:
    response = httpx.get(served.control + "/mail", params=query)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", next(iter(query))]


def _refused(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_a_host_taken_down_and_brought_up(served: Served) -> None:
    control = served.control
    listed = httpx.get(control + "/hosts").json()
    assert {h["name"]: h["state"] for h in listed["hosts"]} == {
        "example.com": "up",
        "other.test": "up",
    }
    assert "refused" in listed["variants"]
    address = served.mx["other.test"]

    down = httpx.post(control + "/hosts/other.test/down", json={"variant": "refused"})
    assert down.status_code == 200
    assert (down.json()["state"], down.json()["drifted"]) == ("refused", True)
    deadline = time.monotonic() + 5
    while not _refused(address):
        assert time.monotonic() < deadline, "other.test still accepts connections"
        time.sleep(0.05)

    up = httpx.post(control + "/hosts/other.test/up", json={})
    assert (up.status_code, up.json()["state"]) == (200, "up")
    assert send(served, "other.test", ["b@other.test"], "Back") == {}  # on the same port

    # Both switches are journaled, in order, as host entries.
    changes = entries(served, "/mail", kind="host", host="other.test")
    assert [(c["data"]["state"], c["data"]["variant"]) for c in changes][-2:] == [
        ("down", "refused"),
        ("up", "refused"),
    ]

    # A reset puts a host taken down at run time back as configured.
    httpx.post(control + "/hosts/other.test/down", json={"variant": "greeting_421"})
    assert httpx.post(control + "/reset", json={}).status_code == 200
    states = {h["name"]: h["state"] for h in httpx.get(control + "/hosts").json()["hosts"]}
    assert states["other.test"] == "up"


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        (
            "/hosts/other.tst/down",
            {"variant": "refused"},
            404,
            "unknown host 'other.tst'; did you mean 'other.test'?",
        ),
        (
            "/hosts/other.test/down",
            {"variant": "refuse"},
            422,
            "unknown server-down variant 'refuse'; did you mean 'refused'?",
        ),
        (
            "/hosts/other.test/down",
            {"variant": "tarpit", "delay": 1},
            409,
            "server-down variant 'tarpit' takes no options, got {'delay': 1.0}",
        ),
    ],
)
def test_bad_host_switches_are_refused_with_the_reason(
    served: Served, path: str, body: dict[str, Any], status: int, detail: str
) -> None:
    response = httpx.post(served.control + path, json=body)
    assert (response.status_code, response.json()["detail"]) == (status, detail)


def test_the_mail_routes_are_in_openapi(served: Served) -> None:
    base = served.control.rsplit("/", 1)[0]
    paths = httpx.get(base + "/openapi.json").json()["paths"]
    for route in ("mail", "sessions", "messages", "dsns", "decisions", "hosts", "report"):
        assert f"/_harness/{route}" in paths, route
    assert "/_harness/messages/{seq}.eml" in paths
    assert "/_harness/hosts/{name}/down" in paths


def test_without_a_mail_world_the_host_routes_say_so() -> None:
    from harness.clevertap.server import CleverTapServer

    with CleverTapServer() as ct:
        response = httpx.get(ct.urls.control + "/hosts")
        assert response.status_code == 409
        assert "no mail world" in response.json()["detail"]
        # The mail reads still work: an empty journal.
        assert httpx.get(ct.urls.control + "/mail").json()["entries"] == []


@pytest.mark.slow
def test_mail_reads_over_http_at_100k_entries(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.clevertap.server import CleverTapServer
    from harness.journal import MemoryJournal
    from tests.dashboard.test_reads import fill

    journal = MemoryJournal()
    fill(journal, 100_000)  # replies and callbacks for 1000 addresses, a DSN every 1000
    lines = []
    with CleverTapServer(journal=journal) as server, httpx.Client(timeout=30) as client:
        for path in (
            "/mail",
            "/mail?recipient=user7@example.com",
            "/decisions?recipient=USER7@example.com&limit=1000",
            "/decisions?code=2xx",
            "/dsns",
            "/dsns?recipient=user999@example.com",
            "/mail?host=nowhere",
        ):
            client.get(server.urls.control + path)  # warm
            start = time.perf_counter()
            response = client.get(server.urls.control + path)
            took = time.perf_counter() - start
            assert response.status_code == 200, path
            found = len(response.json()["entries"])
            lines.append(f"GET {path:52} {found:5} entries {took * 1000:8.1f} ms")
            assert found or path.endswith("nowhere"), path
            # Through the address index: a recipient's page never walks the journal.
            if "recipient" in path:
                assert took < 0.5, path
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_the_mail_routes_want_the_token_like_the_rest() -> None:
    from harness.clevertap.server import CleverTapServer
    from harness.clevertap.settings import ServerSettings

    with CleverTapServer(ServerSettings(token="s3cret")) as ct:
        for method, route in (("GET", "/mail"), ("GET", "/hosts"), ("POST", "/hosts/x/up")):
            url = ct.urls.control + route
            refused = httpx.request(method, url, json={} if method == "POST" else None)
            assert refused.status_code == 401, route
            given = httpx.request(
                method,
                url,
                json={} if method == "POST" else None,
                headers={"authorization": "Bearer s3cret"},
            )
            assert given.status_code == (200 if route == "/mail" else 409), route


def test_a_dsn_delivered_into_a_maildir_downloads_as_sent(tmp_path: Path) -> None:
    from harness.scenario.loader import load_scenario
    from harness.world import World

    path = tmp_path / "mail-api.yaml"
    path.write_text(SCENARIO)
    world = World.from_scenario(load_scenario(path))
    world.bounce_intake = tmp_path / "Maildir"
    with world:
        host = world.mail.hosts["example.com"]
        served = Served(world.clevertap.urls.control, {"example.com": (host.bind, host.port)})
        send(served, "example.com", ["late@example.com"], "Late")
        deadline = time.monotonic() + 10
        while not (found := entries(served, "/dsns")):
            assert time.monotonic() < deadline, "no DSN journaled within 10 s"
            time.sleep(0.05)
        (dsn,) = found
        assert dsn["data"]["transport"] == "maildir"
        raw = httpx.get(f"{served.control}/dsns/{dsn['seq']}.eml")
        assert raw.status_code == 200
        assert raw.headers["content-type"] == "message/rfc822"
        parsed = message_from_bytes(raw.content)
        assert parsed.get_content_type() == "multipart/report"
        assert b"Final-Recipient: rfc822; late@example.com" in raw.content
        # The intake's copy is what was served.
        (kept,) = (tmp_path / "Maildir" / "new").iterdir()
        assert kept.read_bytes() == raw.content
        missing = httpx.get(f"{served.control}/dsns/{dsn['seq'] - 1}.eml")
        assert (missing.status_code, missing.json()["detail"]) == (
            404,
            f"journal entry {dsn['seq'] - 1} is no DSN kept in a Maildir",
        )


def test_the_scenario_judged_over_the_control_api(served: Served) -> None:
    report = httpx.get(served.control + "/report", timeout=30)
    assert report.status_code == 200
    data = report.json()
    assert (data["format"], data["summary"]["total"]) == ("clevertap-harness-report", 1)
    (scenario,) = data["scenarios"]
    assert scenario["scenario"] == "mail-api"
    assert {e["path"] for e in scenario["expectations"]} >= {"expect.violations"}
    later = httpx.get(served.control + "/report", params={"since": 10**9}, timeout=30).json()
    assert later["scenarios"][0]["counts"]["entries"] == 0
    # Without a scenario there is nothing to judge.
    from harness.clevertap.server import CleverTapServer

    with CleverTapServer() as ct:
        missing = httpx.get(ct.urls.control + "/report")
        assert missing.status_code == 404
        assert "no scenario to judge" in missing.json()["detail"]
