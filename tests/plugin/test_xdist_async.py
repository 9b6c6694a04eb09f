"""xdist (each worker its own servers and journal) and async tests (pytest-asyncio, anyio)."""

from __future__ import annotations

import json

import pytest


def test_xdist_workers_get_their_own_ports_and_journal(project: pytest.Pytester) -> None:
    out = project.path / "ports"
    out.mkdir()
    project.makepyfile(
        f"""
        import json
        import os
        import pathlib

        import httpx
        import pytest

        from bodies import JSON, legacy


        @pytest.mark.parametrize("n", range(6))
        def test_record(ct_world, n):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            r = httpx.post(ct_world.urls.bounce, content=legacy("hardbounce", f"{{n}}@example.com"),
                           headers=JSON)
            assert r.status_code == 200
            ct_world.expect_callback("hardbounce", f"{{n}}@example.com")
            record = {{"worker": worker, "clevertap": ct_world.clevertap.port,
                       "relay": ct_world.mx.relay.port}}
            pathlib.Path({str(out)!r}, f"{{n}}.json").write_text(json.dumps(record))
        """
    )
    journal = project.path / "run.sqlite"
    result = project.runpytest_subprocess("-n", "2", f"--harness-journal={journal}")
    result.assert_outcomes(passed=6)
    records = [json.loads(p.read_text()) for p in sorted(out.iterdir())]
    by_worker: dict[str, set[tuple[int, int]]] = {}
    for record in records:
        by_worker.setdefault(record["worker"], set()).add((record["clevertap"], record["relay"]))
    assert sorted(by_worker) == ["gw0", "gw1"]
    # one session world per worker: the same ports for all of a worker's tests
    assert all(len(ports) == 1 for ports in by_worker.values())
    (gw0,), (gw1,) = by_worker["gw0"], by_worker["gw1"]
    assert not set(gw0) & set(gw1)
    assert sorted(p.name for p in project.path.glob("run-*.sqlite")) == [
        "run-gw0.sqlite",
        "run-gw1.sqlite",
    ]
    assert not journal.exists()


def test_async_tests_wait_without_blocking_their_loop(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import asyncio

        import httpx
        import pytest

        from bodies import JSON, legacy


        async def wait_then_post(ct_world):
            # The wait starts first; the post runs on the same loop. If the wait blocked the
            # loop, the post could not happen and the wait would time out.
            waiter = asyncio.ensure_future(
                ct_world.expect_callback_async("unsubscribe", "u@example.com", within=5))
            await asyncio.sleep(0)
            assert not waiter.done()
            async with httpx.AsyncClient() as client:
                r = await client.post(ct_world.urls.unsubscribe,
                                      content=legacy("unsubscribe", "u@example.com"),
                                      headers=JSON)
            assert r.status_code == 200
            entry = await waiter
            assert entry.data.endpoint == "unsubscribe"
            await ct_world.expect_no_callbacks_async(within=0.05, email="other@example.com")


        @pytest.mark.asyncio
        async def test_with_pytest_asyncio(ct_world):
            await wait_then_post(ct_world)


        @pytest.fixture
        def anyio_backend():
            return "asyncio"


        @pytest.mark.anyio
        async def test_with_anyio(ct_world):
            await wait_then_post(ct_world)


        @pytest.mark.asyncio
        async def test_async_failure(ct_world):
            await ct_world.expect_callback_async("hardbounce", "late@example.com", within=0.1)
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            '>       await ct_world.expect_callback_async("hardbounce", "late@example.com", '
            "within=0.1)",
            "E       harness.errors.ExpectationError: expected a hardbounce callback for "
            "late@example.com within 0.1 s (journal after seq *)",
            "E       arrived: no callbacks at all",
        ]
    )
