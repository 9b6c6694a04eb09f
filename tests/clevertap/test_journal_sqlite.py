"""A fake CleverTap on an SQLite journal file: a restart loses nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.journal import Kind, SQLiteJournal
from harness.records import Callback

NOW = int(time.time())
JSON = {"content-type": "application/json"}


def legacy(event: str, email: str) -> bytes:
    return json.dumps([{"event": event, "data": [{"e": email, "ts": NOW}]}]).encode()


def test_restart_on_the_same_file_keeps_every_callback(tmp_path: Path) -> None:
    settings = ServerSettings(journal_path=tmp_path / "journal.db")
    with CleverTapServer(settings) as first, httpx.Client() as client:
        client.post(first.urls.bounce, content=legacy("softbounce", "a@example.com"), headers=JSON)
        client.post(first.urls.bounce, content=b"garbage", headers=JSON)
        before = client.get(first.urls.control + "/callbacks").json()["callbacks"]
    assert [c["data"]["status"] for c in before] == [200, 400]

    with CleverTapServer(settings) as second, httpx.Client() as client:
        body = legacy("unsubscribe", "b@example.com")
        client.post(second.urls.unsubscribe, content=body, headers=JSON)
        after = client.get(second.urls.control + "/callbacks").json()["callbacks"]
        violations = client.get(second.urls.control + "/violations?code=CT101").json()
    # The old entries come back exactly, and numbering goes on after them.
    assert after[:2] == before
    assert after[2]["seq"] == before[1]["seq"] + 1
    assert after[2]["data"]["events"] == [["unsubscribe", "b@example.com", NOW, None]]
    assert [v["seq"] for v in violations["violations"]] == [before[1]["seq"]]


def test_the_server_closes_the_file_it_opened_and_reopens_it_on_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    ct = CleverTapServer(ServerSettings(journal_path=path))
    answers = []
    with ct:
        body = legacy("hardbounce", "a@example.com")
        answers.append(httpx.post(ct.urls.bounce, content=body, headers=JSON).status_code)
    with ct:
        body = legacy("hardbounce", "b@example.com")
        answers.append(httpx.post(ct.urls.bounce, content=body, headers=JSON).status_code)
        assert len(ct.journal.entries(Kind.CALLBACK)) == 2
    assert answers == [200, 200]  # the restarted server checks and records as the first did
    with SQLiteJournal(path) as reopened:
        records = [e.data for e in reopened.entries(Kind.CALLBACK)]
    assert all(isinstance(r, Callback) for r in records)
    emails = [e.email for r in records if isinstance(r, Callback) for e in r.events]
    assert emails == ["a@example.com", "b@example.com"]


def test_reset_empties_the_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with CleverTapServer(ServerSettings(journal_path=path)) as ct:
        httpx.post(ct.urls.bounce, content=legacy("hardbounce", "a@example.com"), headers=JSON)
        forgotten = ct.journal.last_seq
        assert httpx.post(ct.urls.control + "/reset", json={}).status_code == 200
    with SQLiteJournal(path) as reopened:
        assert reopened.entries() == []
        # A seq handed out before the reset is never handed out again, also after a restart.
        assert reopened.next_seq > forgotten > 0


def test_a_wrong_path_is_in_the_file_once_answered(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with CleverTapServer(ServerSettings(journal_path=path)) as ct:
        answer = httpx.post(ct.url + "/callbacks/bounce/", content=b"[]", headers=JSON)
        assert answer.status_code == 404
        # Answered only once committed: another reader of the file sees it already.
        with SQLiteJournal(path) as other:
            (entry,) = other.entries(Kind.CALLBACK)
    assert isinstance(entry.data, Callback)
    assert (entry.data.endpoint, entry.data.path, entry.data.status) == (
        None,
        "/callbacks/bounce/",
        404,
    )
