"""The clicker stays in the harness's world: loopback, the integration's announced addresses and
the scenario's unsubscribe_allow_hosts; redirects are checked hop by hop."""

from __future__ import annotations

from dataclasses import replace

import pytest
import respx
from pytest_httpserver import HTTPServer

from harness.errors import ScenarioError
from harness.journal import Kind, MemoryJournal
from harness.scenario.clicks import MAX_HOPS, ClickScope, click_notes, perform_click
from harness.scenario.judge import judge
from harness.scenario.loader import parse_scenario
from harness.scenario.model import Click
from harness.scenario.report import render_text
from tests.scenario.test_runner import _delivered, clicked

OUTSIDE = (
    "is outside the harness's world (loopback and the integration's announced addresses); "
    "list it in the scenario's unsubscribe_allow_hosts to allow it"
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/u",
        "https://127.8.9.10/u",
        "http://[::1]:80/u",
        "http://[::ffff:127.0.0.1]/u",
        "http://localhost:1234/u",
        "HTTP://LOCALHOST/u",
    ],
)
def test_loopback_is_always_in_scope(url: str) -> None:
    assert ClickScope().refusal(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://unsub.example.com/u", f"unsub.example.com {OUTSIDE}"),
        ("http://10.1.2.3/u", f"10.1.2.3 {OUTSIDE}"),
        ("http://0.0.0.0:80/u", f"0.0.0.0 {OUTSIDE}"),
        ("http://2130706433/u", f"2130706433 {OUTSIDE}"),  # 127.0.0.1 as one number
        ("http://localhost.evil.example/u", f"localhost.evil.example {OUTSIDE}"),
        ("ftp://127.0.0.1/u", "'ftp://127.0.0.1/u' is not an http(s) URL"),
        ("http:///u", "'http:///u' names no host"),
        ("http://[::1/u", "'http://[::1/u' is not a valid URL"),
    ],
)
def test_everything_else_is_refused_by_default(url: str, reason: str) -> None:
    assert ClickScope().refusal(url) == reason


def test_a_scope_is_built_from_the_scenario_and_the_announced_addresses() -> None:
    scenario = parse_scenario(
        """\
campaign: {from: news@brand.test, to: [a@example.com]}
unsubscribe_allow_hosts: [unsub.brand.test, "*.links.brand.test", 192.0.2.0/24, 2001:db8::1]
""",
        source="scope.yaml",
    )
    scope = ClickScope.build(
        scenario.unsubscribe_allow_hosts,
        announced=["sut.internal:2525", None, "http://pages.internal:8080/base"],
    )
    allowed = [
        "https://unsub.brand.test/x",
        "https://a.b.links.brand.test/x",
        "http://192.0.2.77/x",
        "http://[2001:db8::1]/x",
        "http://sut.internal/x",
        "http://pages.internal:9999/other",
    ]
    assert [scope.refusal(u) for u in allowed] == [None] * len(allowed)
    refused = ["https://brand.test/x", "https://links.brand.test/x", "http://192.0.3.1/x"]
    assert all(scope.refusal(u) for u in refused)


def test_a_bad_allow_list_entry_is_a_scenario_error_at_its_line() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(
            "campaign: {from: news@brand.test, to: [a@example.com]}\n"
            "unsubscribe_allow_hosts:\n  - ok.example.com\n  - http://x.test/\n",
            source="bad.yaml",
        )
    assert info.value.problems == [
        "bad.yaml:4:5: unsubscribe_allow_hosts[1]: not a host pattern (expected a name "
        "(unsub.example.com), *.example.com, an IP address or a network (10.0.0.0/8), seen "
        "'http://x.test/')"
    ]


@pytest.mark.asyncio
async def test_a_redirect_out_of_the_world_is_refused_at_that_hop(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/u").respond_with_data("", status=302, headers={"Location": "/next"})
    httpserver.expect_request("/next").respond_with_data(
        "", status=303, headers={"Location": "http://tracker.example.com/u?id=1"}
    )
    journal = MemoryJournal()
    _delivered(journal, list_unsubscribe=f"<{httpserver.url_for('/u')}>")
    click = Click(recipient="reader@example.com", via="get")
    entry = await perform_click(click, journal, deadline=0, intake=None)
    reason = f"tracker.example.com {OUTSIDE}"
    record = clicked(entry)
    assert record.refused == reason
    assert record.error == f"refused to contact http://tracker.example.com/u?id=1: {reason}"
    assert record.ok is False
    assert [s.status for s in record.steps] == [302, 303]
    assert click_notes(journal.entries()) == [
        f"the get click by reader@example.com was refused: {reason}"
    ]


@pytest.mark.asyncio
async def test_one_click_to_an_outside_url_is_never_posted() -> None:
    journal = MemoryJournal()
    _delivered(
        journal,
        list_unsubscribe="<https://unsub.example.com/t>",
        list_unsubscribe_post="List-Unsubscribe=One-Click",
    )
    click = Click(recipient="reader@example.com", via="one_click")
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post("https://unsub.example.com/t").respond(200)
        entry = await perform_click(click, journal, deadline=0, intake=None)
    assert not route.called
    assert clicked(entry).refused == f"unsub.example.com {OUTSIDE}"
    assert clicked(entry).steps == ()
    # Allowed by the scenario, the same click goes through.
    with respx.mock(assert_all_called=True) as mock:
        mock.post("https://unsub.example.com/t").respond(200)
        scope = ClickScope.build(["unsub.example.com"])
        entry = await perform_click(click, journal, deadline=0, intake=None, scope=scope)
    assert (clicked(entry).ok, clicked(entry).refused) == (True, None)


@pytest.mark.asyncio
async def test_redirects_are_followed_hop_by_hop_to_a_limit(httpserver: HTTPServer) -> None:
    for i in range(MAX_HOPS + 1):
        httpserver.expect_request(f"/r{i}").respond_with_data(
            "", status=302, headers={"Location": f"/r{i + 1}"}
        )
    journal = MemoryJournal()
    _delivered(journal, list_unsubscribe=f"<{httpserver.url_for('/r0')}>")
    entry = await perform_click(
        Click(recipient="reader@example.com", via="get"), journal, deadline=0, intake=None
    )
    record = clicked(entry)
    assert record.error == f"more than {MAX_HOPS} redirects; last to '/r{MAX_HOPS + 1}'"
    assert len(record.steps) == MAX_HOPS + 1
    assert record.refused is None


@pytest.mark.asyncio
async def test_a_loopback_redirect_chain_ends_at_the_confirm_form(httpserver: HTTPServer) -> None:
    page = '<form method="post" action="/confirm"><input name="t" value="9"></form>'
    httpserver.expect_request("/u").respond_with_data("", status=301, headers={"Location": "/p"})
    httpserver.expect_request("/p").respond_with_data(page, content_type="text/html")
    httpserver.expect_request("/confirm", method="POST", data="t=9").respond_with_data(
        "", status=303, headers={"Location": "/done"}
    )
    httpserver.expect_request("/done").respond_with_data("bye", content_type="text/html")
    journal = MemoryJournal()
    _delivered(journal, list_unsubscribe=f"<{httpserver.url_for('/u')}>")
    entry = await perform_click(
        Click(recipient="reader@example.com", via="get"), journal, deadline=0, intake=None
    )
    record = clicked(entry)
    assert record.ok is True, record
    steps = [(s.method, s.url.rsplit("/", 1)[1], s.status) for s in record.steps]
    assert steps == [
        ("GET", "u", 301),
        ("GET", "p", 200),
        ("POST", "confirm", 303),
        ("GET", "done", 200),
    ]
    assert click_notes(journal.entries(Kind.CLICK)) == []


def test_a_refused_click_note_appears_in_the_text_report() -> None:
    scenario = parse_scenario(
        "campaign: {from: news@brand.test, to: [a@example.com]}\n", source="notes.yaml"
    )
    verdict = judge(scenario, MemoryJournal(), started=0.0, finished=1.0)
    note = f"the get click by a@example.com was refused: tracker.example.com {OUTSIDE}"
    # The lead's judge fills Verdict.notes from click_notes(); the report shows them.
    text = render_text(replace(verdict, notes=[note]), width=400)
    assert f"note: {note}" in text.splitlines()
