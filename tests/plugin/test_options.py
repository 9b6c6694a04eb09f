"""Settings from the command line, the ini file and CTHARNESS_* variables; turning it off."""

from __future__ import annotations

import pytest

from harness.journal import Kind, SQLiteJournal
from harness.records import Callback

SHOW_SETTINGS = """
def test_show(ct_settings):
    print("SETTINGS", ct_settings.timeout, ct_settings.strictness,
          ct_settings.callback_format)
"""


def settings_line(result: pytest.RunResult) -> str:
    [line] = [line for line in result.outlines if line.startswith("SETTINGS")]
    return line


def test_defaults(project: pytest.Pytester) -> None:
    project.makepyfile(SHOW_SETTINGS)
    result = project.runpytest("-rP")
    result.assert_outcomes(passed=1)
    assert settings_line(result) == "SETTINGS 5.0 strict legacy"


def test_precedence_is_cli_then_ini_then_env(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(SHOW_SETTINGS)
    monkeypatch.setenv("CTHARNESS_TIMEOUT", "7")
    monkeypatch.setenv("CTHARNESS_STRICTNESS", "lenient")
    monkeypatch.setenv("CTHARNESS_CALLBACK_FORMAT", "v2")
    assert settings_line(project.runpytest("-rP")) == "SETTINGS 7.0 lenient v2"

    project.makeini(
        """
        [pytest]
        addopts = -p no:cacheprovider
        asyncio_default_fixture_loop_scope = function
        ct_timeout = 2.5
        ct_strictness = strict
        """
    )
    assert settings_line(project.runpytest("-rP")) == "SETTINGS 2.5 strict v2"
    result = project.runpytest("-rP", "--ct-timeout=0.25", "--ct-callback-format=legacy")
    assert settings_line(result) == "SETTINGS 0.25 strict legacy"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--ct-timeout=soon"],
            {},
            '--ct-timeout must be a positive duration (5, "200ms", "2s", "1.5m"), got \'soon\'',
        ),
        ([], {"CTHARNESS_TIMEOUT": "-1"}, "CTHARNESS_TIMEOUT must be a positive duration *"),
        (["--ct-strictness=loose"], {}, "--ct-strictness must be strict or lenient, got 'loose'"),
        ([], {"CTHARNESS_RELAY_PORT": "70000"}, "CTHARNESS_RELAY_PORT must be a port 0-65535*"),
        (
            ["--ct-host=0.0.0.0"],
            {},
            "--ct-host / --ct-token: host '0.0.0.0' is not a loopback address: set a token *"
            "(--ct-token, ct_token or CTHARNESS_TOKEN)",
        ),
    ],
)
def test_bad_values_fail_the_tests_that_use_the_plugin_naming_their_source(
    project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    project.makepyfile(SHOW_SETTINGS + "\n\ndef test_unrelated():\n    pass\n")
    result = project.runpytest(*args)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"clevertap-harness: {message}"])
    # Said once, in the error of the test that used the fixture.
    assert sum("clevertap-harness:" in line for line in result.outlines) == 1


def test_a_bad_value_does_not_break_a_suite_that_never_uses_the_plugin(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTHARNESS_TIMEOUT", "soon")
    monkeypatch.setenv("HARNESS_TIMEOUT", "soon")  # the integration contract's prefix: not ours
    project.makepyfile("def test_unrelated():\n    assert 1 + 1 == 2\n")
    project.runpytest().assert_outcomes(passed=1)


def test_durations_in_the_one_grammar(project: pytest.Pytester) -> None:
    project.makepyfile(SHOW_SETTINGS)
    result = project.runpytest("-rP", "--ct-timeout=1.5m")
    assert settings_line(result) == "SETTINGS 90.0 strict legacy"
    result = project.runpytest("-rP", "--ct-timeout=200ms")
    assert settings_line(result) == "SETTINGS 0.2 strict legacy"


def test_timeout_is_the_default_within_and_lenient_answers_200(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
        import httpx
        import pytest

        from bodies import JSON, legacy


        @pytest.mark.ct_checks(allow=["CT303"])
        def test_lenient(ct_world):
            r = httpx.post(ct_world.urls.bounce,
                           content=legacy("hardbounce", "a@example.com", ts=1_700_000_000_000),
                           headers=JSON)
            assert r.status_code == 200


        def test_default_within(ct_world):
            ct_world.expect_callback("softbounce", "nobody@example.com")
        """
    )
    result = project.runpytest("--ct-timeout=0.1", "--ct-strictness=lenient")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["E * expected a softbounce callback for nobody@example.com within 0.1 s *"]
    )


def test_journal_file_keeps_the_whole_run(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import httpx

        from bodies import JSON, legacy


        def test_one(ct_world):
            httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", "one@example.com"),
                       headers=JSON)
            assert len(ct_world.callbacks()) == 1


        def test_two(ct_world):
            httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", "two@example.com"),
                       headers=JSON)
            emails = [e.email for entry in ct_world.callbacks() for e in entry.data.events]
            assert emails == ["two@example.com"]
        """
    )
    path = project.path / "runs" / "journal.sqlite"
    project.runpytest(f"--ct-journal={path}").assert_outcomes(passed=2)
    with SQLiteJournal(path) as journal:
        records = [e.data for e in journal.entries(Kind.CALLBACK)]
    assert all(isinstance(r, Callback) for r in records)
    emails = [e.email for r in records if isinstance(r, Callback) for e in r.events]
    assert emails == ["one@example.com", "two@example.com"]


def test_p_no_switches_the_plugin_off(project: pytest.Pytester) -> None:
    project.makepyfile("def test_uses_it(ct_world):\n    pass\n")
    result = project.runpytest("-p", "no:ctharness")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'ct_world' not found*"])
    result = project.runpytest("-p", "no:ctharness", "--ct-timeout=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --ct-timeout=1*"])
