"""The fixtures, used by real inner test runs (pytester) against real servers."""

from __future__ import annotations

import pytest


def test_ct_world_clevertap_and_mx_drive_real_servers(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import smtplib

        import httpx

        from bodies import JSON, legacy
        from harness.journal import Kind
        from harness.records import Callback, Recipient, SmtpMessage


        def test_callback(ct_world, clevertap):
            assert clevertap is ct_world.clevertap
            r = httpx.post(clevertap.urls.bounce, content=legacy("hardbounce", "gone@example.com"),
                           headers=JSON)
            assert r.status_code == 200
            entry = ct_world.expect_callback("hardbounce", "gone@example.com", within=5)
            assert entry.kind is Kind.CALLBACK
            assert isinstance(entry.data, Callback)
            event = entry.data.events[0]
            assert (event.event, event.email) == ("hardbounce", "gone@example.com")
            assert [e.seq for e in ct_world.callbacks()] == [entry.seq]


        def test_relay(ct_world, mx):
            env = ct_world.sut_env()
            relay = mx.relay
            assert env["HARNESS_RELAY"] == f"127.0.0.1:{relay.port}"
            assert env["HARNESS_BOUNCE_URL"] == ct_world.urls.bounce
            assert env["HARNESS_CALLBACK_FORMAT"] == "legacy"
            with smtplib.SMTP("127.0.0.1", relay.port) as smtp:
                refused = smtp.sendmail("news@brand.test", ["anyone@example.org"],
                                        "Subject: hi\\r\\n\\r\\nbody\\r\\n")
            assert refused == {}
            [message] = ct_world.entries(Kind.SMTP_MESSAGE)
            assert isinstance(message.data, SmtpMessage)
            assert message.data.sender == "news@brand.test"
            assert message.data.recipients == (Recipient(address="anyone@example.org"),)
            assert message.data.subject == "hi"
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=2)


def test_every_test_starts_from_a_reset_world_on_the_same_servers(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
        import httpx

        from bodies import JSON, legacy
        from harness.clevertap.faults import FaultRule

        seen = {}


        def post(ct_world):
            return httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", "a@example.com"),
                              headers=JSON)


        def test_first(ct_world, harness_world):
            seen["world"], seen["port"] = harness_world, ct_world.clevertap.port
            assert post(ct_world).status_code == 200
            ct_world.clevertap.faults.set([FaultRule(action="status", status=503)])
            assert post(ct_world).status_code == 503
            ct_world.world.bounce_intake = ("127.0.0.1", 9)


        def test_second(ct_world, harness_world):
            # same servers, nothing left over: no entries, no fault, no intake, no duplicate
            assert harness_world is seen["world"]
            assert ct_world.clevertap.port == seen["port"]
            assert ct_world.callbacks() == []
            assert len(ct_world.journal) == 0
            assert ct_world.clevertap.faults.rules == []
            assert ct_world.world.bounce_intake is None
            assert post(ct_world).status_code == 200
            assert ct_world.violations() == []   # not a duplicate of test_first's event
        """
    )
    result = project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_an_overriding_conftest_world_is_reset_and_checked_too(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        import pytest

        from harness.smtp.world import MailWorld
        from harness.world import World


        @pytest.fixture(scope="session")
        def harness_world():
            mail = MailWorld()
            mail.add_host("mx", domains=["example.com"], rules={"full@example.com": "mailbox_full"})
            with World(mail=mail, journal=mail.journal) as world:
                yield world
        """
    )
    project.makepyfile(
        """
        import smtplib

        import pytest


        def test_full_mailbox(ct_world):
            port = ct_world.mx.host("mx").port
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
                    smtp.sendmail("a@brand.test", ["full@example.com"], "Subject: x\\r\\n\\r\\nx")
            code, reply = info.value.recipients["full@example.com"]
            assert code == 452
            assert ct_world.sut_env()["HARNESS_MX_MAP"] == f'{{"example.com":"127.0.0.1:{port}"}}'


        def test_then_clean(ct_world):
            assert len(ct_world.journal) == 0
        """
    )
    project.runpytest().assert_outcomes(passed=2)
