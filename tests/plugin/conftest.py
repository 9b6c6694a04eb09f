"""Fixtures for the plugin tests: a pytester project configured as strictly as this suite."""

from __future__ import annotations

import pytest

# Import the whole package before any inner run. An in-process `pytester.runpytest()` restores
# sys.modules when it ends, dropping every module first imported during the inner run; the next
# import makes new module objects, and objects from before (a parsed `Rules`) then fail the
# isinstance checks of the new ones. Imported here, the modules are in the snapshot and shared.
import harness.pytest_plugin
import harness.respx_mock
import harness.scenario.judge
import harness.scenario.loader
import harness.world

# What every inner run gets: warnings are errors (as in this suite), pytest-asyncio's loop
# scope set (it warns otherwise), and no cache directory left in the test's tmp dir.
INI = """
[pytest]
filterwarnings = error
asyncio_default_fixture_loop_scope = function
addopts = -p no:cacheprovider
"""

# The plugin's settings in the environment: removed so the developer's shell cannot leak in.
ENV_NAMES = tuple(option.env for option in harness.pytest_plugin._OPTIONS)

# Callback bodies the inner tests post; `ts` is filled in with the current time by the tests.
HELPERS = """
import json
import time


def legacy(event, email, ts=None):
    ts = int(time.time()) if ts is None else ts
    return json.dumps([{"event": event, "data": [{"e": email, "ts": ts}]}])


JSON = {"content-type": "application/json"}
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project with the strict ini and a ``bodies`` helper module."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    # On CI (CI or BUILD_NUMBER set) pytest prints the short summary untruncated, so a message
    # would show twice; the inner runs must read the same wherever the suite runs.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    pytester.makeini(INI)
    pytester.makepyfile(bodies=HELPERS)
    return pytester
