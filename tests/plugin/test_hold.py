"""``--ct-hold``: a failed test's world keeps serving, with its dashboard, until Enter."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import pytest

FAILING = """
import httpx
from bodies import JSON, legacy


def test_reports_the_wrong_event(ct_world):
    httpx.post(ct_world.urls.bounce, content=legacy("softbounce", "held@example.com"),
               headers=JSON)
    ct_world.expect_callback("hardbounce", "held@example.com", within=0.2)
"""


def test_a_failed_test_shows_where_its_world_is(project: pytest.Pytester) -> None:
    project.makepyfile(FAILING)
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r".*dashboard of this test's world: http://127\.0\.0\.1:\d+/"])


def test_hold_keeps_the_world_serving_until_enter(project: pytest.Pytester) -> None:
    project.makepyfile(FAILING)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--ct-hold", "-p", "no:cacheprovider"],
        cwd=project.path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        url = None
        seen = []
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"dashboard\s+(http://\S+/)$", line.strip())
            url = found.group(1) if found else None
        assert url is not None, "".join(seen)
        assert "press Enter" in process.stdout.readline()
        # Held: the world still answers, and its dashboard shows the failed test's callback.
        page = httpx.get(url, params={"address": "held@example.com"}, timeout=10)
        assert page.status_code == 200
        assert "softbounce" in page.text
        assert process.poll() is None
        process.stdin.write("\n")
        process.stdin.flush()
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, rest
    assert "1 failed" in rest


def test_hold_is_refused_with_xdist(project: pytest.Pytester) -> None:
    project.makepyfile("def test_nothing():\n    pass\n")
    result = project.runpytest("--ct-hold", "-n", "1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ct-hold waits for Enter*run the failing test without -n*"])


def test_hold_does_not_stop_on_a_skip(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        def test_skipped(ct_world):
            pytest.skip("not today")
        """
    )
    # In process, a hold would find no terminal and go on at once, but it would say so first.
    result = project.runpytest("--ct-hold")
    result.assert_outcomes(skipped=1)
    assert "press Enter" not in result.stdout.str()
