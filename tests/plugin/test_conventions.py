"""Conventions shared with pytest and respx: hypothesis examples, async misuse, markers that are
read or refused, the ct_mock fixture, and serving an integration off loopback."""

from __future__ import annotations

import pytest


def test_ct_world_inside_given_is_reset_before_every_example(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import httpx
        from hypothesis import HealthCheck, given, settings, strategies as st

        from bodies import JSON, legacy

        SEEN = []


        @settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(st.integers(0, 3))
        def test_same_address_every_example(ct_world, n):
            # The same address in every example: without a reset per example the duplicate
            # index would answer the second one 400 (CT402) and the journal would grow.
            r = httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", "a@example.com"),
                           headers=JSON)
            assert r.status_code == 200, r.text
            assert len(ct_world.callbacks()) == 1
            SEEN.append(ct_world.since)


        def test_examples_ran():
            assert len(SEEN) > 1
        """
    )
    project.runpytest().assert_outcomes(passed=2)


def test_ct_mock_inside_given_is_reset_before_every_example(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import httpx
        from hypothesis import HealthCheck, given, settings, strategies as st

        from bodies import JSON, legacy


        @settings(max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(st.integers(0, 3))
        def test_same_address_every_example(ct_mock, n):
            r = httpx.post(ct_mock.urls.bounce, content=legacy("hardbounce", "a@example.com"),
                           headers=JSON)
            assert r.status_code == 200, r.text  # no CT402: the duplicates are per example
            assert len(ct_mock.journal.entries()) == 1
        """
    )
    project.runpytest().assert_outcomes(passed=1)


def test_violations_fail_the_example_that_caused_them_and_hypothesis_shrinks_to_it(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
        import httpx
        from hypothesis import HealthCheck, given, settings, strategies as st

        from bodies import JSON, legacy


        @settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture],
                  database=None)
        @given(st.integers(0, 50))
        def test_ms_from_ten(ct_world, n):
            ts = 1_700_000_000_000 if n >= 10 else None  # milliseconds: CT303, an error
            httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", "a@example.com", ts=ts),
                       headers=JSON)
        """
    )
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*error-level check violations were recorded during this test:*",
            "*CT303*",
            "*test_ms_from_ten(",
            "*n=10,*",
        ]
    )


def test_a_sync_wait_inside_a_running_loop_fails_at_once_naming_the_async_one(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
        import time

        import pytest


        @pytest.mark.asyncio
        async def test_sync_expect_in_async_test(ct_world):
            started = time.monotonic()
            with pytest.raises(ValueError) as info:
                ct_world.expect_callback("hardbounce", "a@example.com", within=30)
            assert time.monotonic() - started < 1
            print("MESSAGE", info.value)
        """
    )
    result = project.runpytest("-rP")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "MESSAGE expect_callback() waits by blocking, and it was called inside a running "
            "event loop (an async test?), where it would stall the loop; use "
            "`await ...expect_callback_async(...)`"
        ]
    )


def test_a_scenario_marker_nobody_reads_is_refused(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest


        @pytest.mark.ct_scenario("typo.yaml")
        def test_with_ct_world(ct_world):
            pass


        @pytest.mark.ct_scenario("typo.yaml")
        def test_with_nothing():
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(failed=0, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*::test_with_ct_world: @pytest.mark.ct_scenario is read only by the ct_scenario "
            "fixture, which this test does not use (ct_world is the plain session world); ask "
            "for ct_scenario instead",
        ]
    )


def test_scenario_load_errors_are_printed_once(project: pytest.Pytester) -> None:
    (project.path / "broken.yaml").write_text("name: broken\ncampain: {}\n")
    project.makepyfile(
        """
        import pytest


        @pytest.mark.ct_scenario("broken.yaml")
        def test_broken(ct_scenario):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    assert sum("does not load" in line for line in result.outlines) == 1
    assert sum("campain" in line for line in result.outlines) == 1


def test_ct_mock_fixture_and_marker_check_on_exit(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import httpx
        import pytest

        from bodies import JSON, legacy

        MS = 1_700_000_000_000


        def test_default_mock(ct_mock):
            assert ct_mock.urls.bounce == "https://callbacks.clevertap.test/callbacks/bounce"
            r = httpx.post(ct_mock.urls.bounce, content=legacy("hardbounce", "a@example.com"),
                           headers=JSON)
            assert r.status_code == 200
            ct_mock.expect_callback("hardbounce", "a@example.com")


        @pytest.mark.ct_mock("http://ct.test", strict=False)
        def test_violation_fails_after_the_test(ct_mock):
            r = httpx.post(ct_mock.urls.bounce, content=legacy("hardbounce", "a@x.com", ts=MS),
                           headers=JSON)
            assert r.status_code == 200  # lenient


        @pytest.mark.ct_mock(strict=False, allow=["CT303"])
        def test_allowed(ct_mock):
            httpx.post(ct_mock.urls.bounce, content=legacy("hardbounce", "a@x.com", ts=MS),
                       headers=JSON)


        def test_wrong_path_fails_after_the_test(ct_mock):
            assert httpx.post(ct_mock.urls.base + "/callbacks/bounc", json=[]).status_code == 404


        def test_body_failure_wins(ct_mock):
            httpx.post(ct_mock.urls.base + "/nope", json=[])
            assert False, "the test's own failure"


        @pytest.mark.ct_mock(strict="yes")
        def test_bad_marker(ct_mock):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=2, failed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ct_mock after the test:",
            "error-level check violations were recorded while the mock ran:",
            "*CT303*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*POST https://callbacks.clevertap.test/callbacks/bounc; did you mean "
            "'/callbacks/bounce'*"
        ]
    )
    result.stdout.fnmatch_lines(["*AssertionError: the test's own failure"])
    result.stdout.fnmatch_lines(
        ["*::test_bad_marker: @pytest.mark.ct_mock: strict must be True, False or None, got 'yes'"]
    )


def test_off_loopback_with_a_token_and_an_advertised_name(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import httpx


        def test_reachable(ct_world, ct_settings):
            assert ct_settings.host == "0.0.0.0"
            port = ct_world.clevertap.port
            base = f"http://127.0.0.1:{port}/_harness"
            assert httpx.get(base + "/callbacks").status_code == 401
            answer = httpx.get(base + "/callbacks", headers={"authorization": "Bearer s3cret"})
            assert answer.status_code == 200
            env = ct_world.sut_env()
            assert env["HARNESS_BOUNCE_URL"].startswith(f"http://integration.test:{port}/")
            assert env["HARNESS_RELAY"] == f"integration.test:{ct_world.mx.relay.port}"
        """
    )
    result = project.runpytest(
        "--ct-host=0.0.0.0", "--ct-token=s3cret", "--ct-advertise=integration.test"
    )
    result.assert_outcomes(passed=1)
