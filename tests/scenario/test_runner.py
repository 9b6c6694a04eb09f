"""The runner's parts, each against real peers: which command starts the integration, the
campaign driver against a real aiosmtpd submission server (AUTH, STARTTLS, implicit TLS), the
unsubscribe clicker's reading of List-Unsubscribe and its RFC 8058 rules."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import respx
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from harness.errors import ConfigError
from harness.journal import Entry, Kind, MemoryJournal
from harness.records import Click as ClickRecord
from harness.records import ClickStep, Sent, record_from_json
from harness.scenario.campaign import Submission, build_message, submit_campaign
from harness.scenario.clicks import ClickScope, list_unsubscribe_uris, perform_click
from harness.scenario.driver import DriverError, DriverProcess
from harness.scenario.loader import load_scenario, parse_scenario
from harness.scenario.model import Click, Credentials
from harness.scenario.sut import EXAMPLE, SutAddresses, SutError, find_example, resolve_command
from harness.smtp.tls import make_certificate

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / EXAMPLE

BASE = "campaign: {from: news@brand.test, to: [a@example.com]}\n"


def _scenario(text: str, path: Path) -> Any:
    path.write_text(text, encoding="utf-8")
    return parse_scenario(text, source=path)


# -- which command -----------------------------------------------------------------------------


def test_default_is_the_bundled_example_next_to_the_scenarios() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "mailbox-full.yaml")
    argv, cwd = resolve_command(scenario)
    assert argv == [sys.executable, str(GATEWAY)]
    assert cwd == ROOT / "scenarios"


def test_default_is_found_from_a_scenario_anywhere(tmp_path: Path) -> None:
    # Next to the harness package (a source checkout), wherever the scenario lives.
    assert find_example(_scenario(BASE, tmp_path / "x.yaml")) == GATEWAY


def test_command_resolves_against_the_scenario_directory(tmp_path: Path) -> None:
    (tmp_path / "gw.py").write_text("", encoding="utf-8")
    text = BASE + "integration: {command: python gw.py --bug no_retry, env: {A: '1'}}\n"
    argv, cwd = resolve_command(_scenario(text, tmp_path / "s.yaml"))
    assert argv == [sys.executable, "gw.py", "--bug", "no_retry"]
    assert cwd == tmp_path


def test_missing_script_names_the_directory(tmp_path: Path) -> None:
    text = BASE + "integration: {command: [python, nothere.py], cwd: sub}\n"
    (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigError) as info:
        resolve_command(_scenario(text, tmp_path / "s.yaml"))
    assert str(info.value) == (
        f"integration.command: script 'nothere.py' not found (relative to {tmp_path / 'sub'})"
    )


def test_override_runs_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    scenario = _scenario(BASE, tmp_path / "s.yaml")
    argv, cwd = resolve_command(scenario, ["python3", "examples/integration/gateway.py"])
    assert (argv, cwd) == ([sys.executable, "examples/integration/gateway.py"], ROOT)
    with pytest.raises(ConfigError, match=r"--sut: program 'no-such-program-x' not found on PATH"):
        resolve_command(scenario, ["no-such-program-x"])


def test_ready_file_addresses() -> None:
    data = {"smtp": "127.0.0.1:2525", "bounce_intake": "127.0.0.1:2526", "http": "http://h:1"}
    assert SutAddresses.from_ready_file(data, "r.json") == SutAddresses(
        ("127.0.0.1", 2525), ("127.0.0.1", 2526), "http://h:1"
    )
    with pytest.raises(SutError, match=r'r.json: the ready file has no "smtp" address'):
        SutAddresses.from_ready_file({"http": "x"}, "r.json")
    with pytest.raises(SutError, match=r'r.json: smtp: expected "host:port", seen \'nope\''):
        SutAddresses.from_ready_file({"smtp": "nope"}, "r.json")


# -- the campaign driver -------------------------------------------------------------------------


@dataclass
class Inbox:
    """A submission server: AUTH required (user/secret), refuses refuse@..., keeps the rest."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    connections: int = 0
    authenticated: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.startswith("refuse@"):
            return "550 5.1.1 refused here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(
            (envelope.mail_from or "", list(envelope.rcpt_tos), envelope.original_content or b"")
        )
        return f"250 2.0.0 Ok: queued as Q{len(self.messages)}"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"user",
            b"secret",
        )
        self.authenticated += ok
        return AuthResult(success=ok, handled=False)


@pytest_asyncio.fixture
async def inbox_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Inbox, Submission]]:
    tls: str = request.param
    cert = make_certificate(("localhost",))
    inbox = Inbox()
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        inbox.connections += 1
        return SMTP(
            inbox,
            loop=loop,
            hostname="sut.test",
            authenticator=inbox.authenticate,
            auth_required=True,
            auth_require_tls=tls == "starttls",
            tls_context=cert.server_context() if tls == "starttls" else None,
            require_starttls=tls == "starttls",
        )

    server = await loop.create_server(
        factory, "127.0.0.1", 0, ssl=cert.server_context() if tls == "implicit" else None
    )
    port = server.sockets[0].getsockname()[1]
    submission = Submission(
        "127.0.0.1",
        port,
        tls=tls,
        auth=Credentials(username="user", password="secret"),
        tls_context=cert.client_context() if tls != "none" else None,
    )
    yield inbox, submission
    server.close()
    await server.wait_closed()


CAMPAIGN = """
campaign:
  from: news@brand.test
  subject: Spring
  per_connection: 2
  campaign_id: c42
  meta: "{e}|{campaign}|{n}|"
  headers: {X-Campaign: spring}
  to: [a@example.com, refuse@example.com, c@example.com, d@example.com, e@example.com]
"""


def sent_records(journal: MemoryJournal) -> list[Sent]:
    records: list[Sent] = []
    for entry in journal.entries(Kind.SENT):
        assert isinstance(entry.data, Sent)
        records.append(entry.data)
    return records


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("inbox_server", ["none", "starttls", "implicit"], indirect=True)
@pytest.mark.parametrize("driver", ["inline", "process"])
async def test_campaign_submission(inbox_server: tuple[Inbox, Submission], driver: str) -> None:
    # The same messages, records and progress whether the driver runs in the runner's process
    # or in one of its own (harness.scenario.driver: large campaigns).
    inbox, submission = inbox_server
    campaign = parse_scenario(CAMPAIGN, source="c.yaml").campaign
    journal = MemoryJournal()
    counted: list[int] = []

    if driver == "inline":
        accepted = await submit_campaign(
            campaign, submission, journal.append, connections=2, on_sent=counted.append
        )
    else:
        process = DriverProcess()
        try:
            accepted = await process.submit(
                campaign, submission, journal.append, connections=2, on_sent=counted.append
            )
        finally:
            await process.close()

    assert accepted == 4
    assert counted == [1, 2, 3, 4, 5]
    assert inbox.connections == 3  # 5 messages, 2 per connection
    assert inbox.authenticated == 3
    sent = {r.to[0]: r for r in sent_records(journal)}
    assert len(sent) == 5
    refused = sent["refuse@example.com"]
    assert (refused.ok, refused.reply, refused.error) == (
        False,
        "550 5.1.1 refused here",
        None,
    )
    for n, address in enumerate(campaign.recipients, start=1):
        record = sent[address]
        assert record.to == (address,)
        assert record.meta == f"{address}|c42|{n}|"
        assert (record.sender, record.subject, record.n) == ("news@brand.test", "Spring", n)
        if address != "refuse@example.com":
            assert record.ok is True
            assert record.reply is not None
            assert record.reply.startswith("250 2.0.0 Ok: queued as Q")
    by_rcpt = {rcpts[0]: raw for _, rcpts, raw in inbox.messages}
    assert sorted(by_rcpt) == ["a@example.com", "c@example.com", "d@example.com", "e@example.com"]
    parsed = email.message_from_bytes(by_rcpt["d@example.com"], policy=email.policy.default)
    assert parsed["X-CleverTap_META"] == "d@example.com|c42|4|"
    assert parsed["Message-ID"] == sent["d@example.com"].message_id
    assert (parsed["To"], parsed["X-Campaign"]) == ("d@example.com", "spring")
    assert "*|UNSUBSCRIBE|*" in parsed.get_content()


@pytest.mark.asyncio
async def test_unreachable_integration_is_journaled_per_message() -> None:
    campaign = parse_scenario(CAMPAIGN, source="c.yaml").campaign
    journal = MemoryJournal()
    # Bound but not listening: the kernel refuses connections, and nobody else can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        accepted = await submit_campaign(campaign, Submission("127.0.0.1", port), journal.append)
    assert accepted == 0
    records = sent_records(journal)
    assert len(records) == 5
    assert all(r.ok is False and r.reply is None for r in records)
    assert all(r.error is not None and f"127.0.0.1:{port}" in r.error for r in records)


@pytest.mark.asyncio
async def test_a_driver_process_that_dies_is_a_harness_error_naming_why() -> None:
    # Port 0 cannot be connected to, but that is journaled per message, not a crash: a crash is
    # a job the child cannot read, here a campaign its model refuses.
    campaign = parse_scenario(CAMPAIGN, source="c.yaml").campaign
    broken = campaign.model_copy(update={"per_connection": 0})
    journal = MemoryJournal()
    process = DriverProcess()
    try:
        with pytest.raises(DriverError) as caught:
            await process.submit(broken, Submission("127.0.0.1", 9), journal.append, connections=1)
    finally:
        await process.close()
    message = str(caught.value)
    assert message.startswith(
        "the campaign driver's process exited with status 1 after 0 of 5 messages; its stderr:"
    )
    assert "per_connection" in message
    assert sent_records(journal) == []


def test_meta_is_never_folded() -> None:
    campaign = parse_scenario(
        "campaign: {from: n@brand.test, to: [a@example.com], meta: '" + "x" * 200 + "|{e}|{n}'}\n",
        source="m.yaml",
    ).campaign
    raw = build_message(campaign, "a@example.com", 1, 1_700_000_000, "t").as_bytes()
    assert b"X-CleverTap_META: " + b"x" * 200 + b"|a@example.com|1\r\n" in raw


# -- the clicker ---------------------------------------------------------------------------------


U_TEST = ClickScope.build(["u.test"])
"""The respx-mocked links below are on u.test, outside the clicker's default scope."""


def test_list_unsubscribe_uris() -> None:
    header = "<https://u.test/x?a=1>,\r\n <mailto:unsub+t@sut.test?subject=bye>"
    assert list_unsubscribe_uris(header) == [
        "https://u.test/x?a=1",
        "mailto:unsub+t@sut.test?subject=bye",
    ]
    assert list_unsubscribe_uris(None) == []
    assert list_unsubscribe_uris("no brackets here") == []


def _delivered(journal: MemoryJournal, **data: Any) -> int:
    """Journal a message accepted for Reader@Example.com, as a fake MX would."""
    record = record_from_json(
        Kind.SMTP_MESSAGE,
        {
            "host": "mx",
            "session": "mx-test",
            "id": "MXTEST",
            "recipients": [{"address": "Reader@Example.com"}],
            **data,
        },
    )
    return journal.append(record).seq


def clicked(entry: Entry) -> ClickRecord:
    assert entry.kind is Kind.CLICK
    assert isinstance(entry.data, ClickRecord)
    return entry.data


@pytest.mark.asyncio
async def test_one_click_needs_the_post_header() -> None:
    journal = MemoryJournal()
    seq = _delivered(journal, list_unsubscribe="<https://u.test/t>", list_unsubscribe_post=None)
    click = Click(recipient="reader@example.com", via="one_click")
    entry = await perform_click(click, journal, deadline=0, intake=None)
    assert clicked(entry) == ClickRecord(
        recipient="reader@example.com",
        via="one_click",
        url="https://u.test/t",
        status=None,
        ok=False,
        error="List-Unsubscribe-Post is 'missing', not 'List-Unsubscribe=One-Click': the "
        "message does not offer RFC 8058 one-click unsubscription",
        message_seq=seq,
        steps=(),
    )


@pytest.mark.asyncio
async def test_one_click_posts_the_form_and_does_not_follow_redirects() -> None:
    journal = MemoryJournal()
    _delivered(
        journal,
        list_unsubscribe="<mailto:u@sut.test>, <https://u.test/t>",
        list_unsubscribe_post="List-Unsubscribe=One-Click",
    )
    click = Click(recipient="reader@example.com", via="one_click")
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://u.test/t").respond(302, headers={"Location": "/done"})
        entry = await perform_click(click, journal, deadline=0, intake=None, scope=U_TEST)
    request = route.calls.last.request
    assert request.content == b"List-Unsubscribe=One-Click"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "cookie" not in request.headers
    record = clicked(entry)
    assert (record.ok, record.status) == (False, 302)
    assert record.error is not None
    assert record.error.startswith("answered 302 with a redirect to '/done'")


@pytest.mark.asyncio
async def test_get_opens_the_body_link_and_confirms_the_form() -> None:
    journal = MemoryJournal()
    _delivered(journal, list_unsubscribe=None, body="Bye: https://u.test/page/1.\n")
    page = '<form method="POST" action="/confirm"><input type=hidden name=t value=1>'
    page += '<input type="submit" name="go" value="Unsubscribe"></form>'
    click = Click(recipient="reader@example.com", via="get")
    with respx.mock(assert_all_called=True) as mock:
        mock.get("https://u.test/page/1").respond(200, html=page)
        confirm = mock.post("https://u.test/confirm").respond(200, html="<p>done</p>")
        entry = await perform_click(click, journal, deadline=0, intake=None, scope=U_TEST)
    assert confirm.calls.last.request.content == b"t=1"
    record = clicked(entry)
    assert record.ok is True
    assert record.steps == (
        ClickStep(method="GET", url="https://u.test/page/1", status=200),
        ClickStep(method="POST", url="https://u.test/confirm", status=200),
    )


@pytest.mark.asyncio
async def test_a_message_that_never_arrives_is_a_failed_click() -> None:
    journal = MemoryJournal()
    click = Click(recipient="reader@example.com", via="mailto")
    entry = await perform_click(click, journal, deadline=0, intake=None)
    record = clicked(entry)
    assert (record.ok, record.message_seq) == (False, None)
    assert record.error == (
        "no message to reader@example.com reached its mail server before the deadline; "
        "nothing to click"
    )
