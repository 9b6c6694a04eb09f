"""What the plugin checks after a test: violations, server errors; opt-outs; real failures kept."""

from __future__ import annotations

import pytest

MS_TS = 1_700_000_000_000  # a timestamp in milliseconds: check CT303, an error


def test_failure_reads_like_a_diff_and_hides_nothing(project: pytest.Pytester) -> None:
    project.makepyfile(
        f"""
        import httpx

        from bodies import JSON, legacy


        def test_expected_hardbounce(ct_world):
            # a softbounce for the address, with a ms timestamp (CT303: strict answers 400)
            r = httpx.post(ct_world.urls.bounce,
                           content=legacy("softbounce", "gone@example.com", ts={MS_TS}),
                           headers=JSON)
            assert r.status_code == 400
            httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", "other@example.com"),
                       headers=JSON)
            ct_world.expect_callback("hardbounce", "gone@example.com", within=0.2)
        """
    )
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            # the test's own line, then the message; no frames of the harness in between
            '>       ct_world.expect_callback("hardbounce", "gone@example.com", within=0.2)',
            "E       harness.errors.ExpectationError: expected a hardbounce callback for "
            "gone@example.com within 0.2 s (journal after seq *)",
            "E       arrived: 2 callbacks, nearest first:",
            "E         seq * bounce 400 * softbounce gone@example.com ts=1700000000000*",
            "E         seq * bounce 200 * hardbounce other@example.com ts=*",
            "E       checks that fired:",
            "E         seq * error * CT303 *.data*.ts *milliseconds*",
            "test_failure_reads_like_a_diff_and_hides_nothing.py:*: ExpectationError",
        ]
    )
    # The body failed: the after-test violation check (CT303 is an error) must not pile on.
    result.stdout.no_fnmatch_line("*violations were recorded during this test*")
    assert "harness/pytest_plugin.py" not in result.stdout.str()


def test_error_violations_fail_a_passing_test_unless_it_opted_out(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        f"""
        import httpx
        import pytest

        from bodies import JSON, legacy


        def post_ms(ct_world):
            httpx.post(ct_world.urls.bounce,
                       content=legacy("hardbounce", "ms@example.com", ts={MS_TS}), headers=JSON)


        def test_not_opted_out(ct_world):
            post_ms(ct_world)


        @pytest.mark.ct_checks(allow_violations=True)
        def test_marker_allows_all(ct_world):
            post_ms(ct_world)


        @pytest.mark.ct_checks(allow=["CT303"])
        def test_marker_allows_the_code(ct_world):
            post_ms(ct_world)


        @pytest.mark.ct_checks(allow=["CT301"])
        def test_marker_allows_another_code(ct_world):
            post_ms(ct_world)


        def test_method_allows_the_code(ct_world):
            ct_world.allow_violations("CT303")
            post_ms(ct_world)


        def test_warnings_do_not_fail(ct_world):
            # a ts from 2023: CT305 is a warning
            httpx.post(ct_world.urls.bounce,
                       content=legacy("hardbounce", "old@example.com", ts=1_700_000_000),
                       headers=JSON)
            assert [v.code for v in ct_world.violations()] == ["CT305"]
        """
    )
    result = project.runpytest("-v")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*::test_not_opted_out FAILED*",
            "*::test_marker_allows_all PASSED*",
            "*::test_marker_allows_the_code PASSED*",
            "*::test_marker_allows_another_code FAILED*",
            "*::test_method_allows_the_code PASSED*",
            "*::test_warnings_do_not_fail PASSED*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_not_opted_out _*",
            "error-level check violations were recorded during this test:",
            "expected no violations (errors) after seq *",
            "found 1:",
            "  seq * error * CT303 *.data*.ts *milliseconds*",
            "(opt out with @pytest.mark.ct_checks(allow=[...]) or allow_violations=True, or call "
            "ct_world.allow_violations() in the test)",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_marker_allows_another_code _*",
            "expected no violations (errors) after seq *, allowing CT301",
        ]
    )


def test_bad_harness_marker_is_a_clear_error(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest


        @pytest.mark.ct_checks(allow=["CT3O3"])
        def test_typo_in_code(ct_world):
            pass


        @pytest.mark.ct_checks(alow=["CT303"])
        def test_typo_in_keyword(ct_world):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_typo_in_code: @pytest.mark.ct_checks(allow=...): allow: 'CT3O3' is not a check "
            "code like 'CT301'",
        ]
    )
    assert (
        "@pytest.mark.ct_checks takes only keyword arguments ['allow', 'allow_violations', "
        "'check_scenario']; got ['alow'] on test_bad_harness_marker_is_a_clear_error.py"
        "::test_typo_in_keyword" in result.stdout.lines
    )


def test_server_errors_surface_in_the_test_that_caused_them(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import smtplib

        import httpx
        import pytest

        import harness.clevertap.app
        import harness.smtp.server
        from bodies import JSON, legacy


        def boom(*args, **kwargs):
            raise RuntimeError("boom in the server")


        def test_http_server_error(ct_world, monkeypatch):
            monkeypatch.setattr(harness.clevertap.app, "quick_inspect", boom)
            monkeypatch.setattr(harness.clevertap.app, "inspect", boom)
            r = httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", "a@example.com"),
                           headers=JSON)
            assert r.status_code == 500


        def test_smtp_server_error(ct_world, monkeypatch):
            monkeypatch.setattr(harness.smtp.server.MXHost, "_decide", boom)
            with smtplib.SMTP("127.0.0.1", ct_world.mx.relay.port) as smtp:
                with pytest.raises(smtplib.SMTPRecipientsRefused):
                    smtp.sendmail("a@brand.test", ["b@example.com"], "Subject: x\\r\\n\\r\\nx")


        def test_body_failure_keeps_its_error_and_shows_the_server_one(ct_world, monkeypatch):
            monkeypatch.setattr(harness.clevertap.app, "quick_inspect", boom)
            monkeypatch.setattr(harness.clevertap.app, "inspect", boom)
            r = httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", "a@example.com"),
                           headers=JSON)
            assert r.status_code == 200


        def test_next_test_is_clean(ct_world):
            r = httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", "a@example.com"),
                           headers=JSON)
            assert r.status_code == 200
        """
    )
    result = project.runpytest("-v")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*_ test_http_server_error _*",
            "1 error(s) inside the harness servers during this test:",
            "  fake CleverTap, journal seq *: inspect() raised RuntimeError: boom in the server",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_smtp_server_error _*",
            "1 error(s) inside the harness servers during this test:",
            "  mail.log: * SMTP session exception",
            "*RuntimeError: boom in the server",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_body_failure_keeps_its_error_and_shows_the_server_one _*",
            ">       assert r.status_code == 200",
            "E       assert 500 == 200",
            "*- Captured harness call -*",
            "1 error(s) inside the harness servers during this test:",
            "  fake CleverTap, journal seq *: inspect() raised RuntimeError: boom in the server",
        ]
    )
    result.stdout.fnmatch_lines(["*::test_next_test_is_clean PASSED*"])


def test_errors_of_servers_the_harness_does_not_own_are_not_blamed_on_it(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
        import logging
        import threading


        def log_elsewhere():
            logging.getLogger("mail.log").error("a server of another test failed")


        def test_starts_the_world(ct_world):
            pass


        def test_own_server_fails_in_its_thread():
            thread = threading.Thread(target=log_elsewhere, name="harness-world-not")
            thread.start()
            thread.join()


        def test_next_harness_test(ct_world):
            log_elsewhere()
        """
    )
    project.runpytest().assert_outcomes(passed=3)
