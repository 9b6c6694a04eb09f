"""The pytest plugin on a shared PostgreSQL journal: ``--ct-journal postgresql://...``."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.journal import Kind, open_journal
from harness.pytest_plugin import HarnessSettings
from harness.records import Callback

pytestmark = pytest.mark.postgres


def test_the_plugins_world_journals_into_the_database(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    import harness  # noqa: F401  (imported before the in-process run, see tests/plugin)

    pytester.makepyfile(
        """
        import httpx

        def test_report(ct_world):
            body = [{"event": "hardbounce", "data": [{"e": "pg@example.com", "ts": 1}]}]
            assert httpx.post(ct_world.urls.bounce, json=body).status_code in (200, 400)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--ct-journal", pg_url)
    result.assert_outcomes(passed=1)
    with open_journal(pg_url) as journal:
        (entry,) = journal.callbacks(address="pg@example.com")
        assert entry.kind is Kind.CALLBACK
        assert isinstance(entry.data, Callback)


def test_a_shared_journal_is_refused_under_xdist() -> None:
    settings = HarnessSettings(journal="postgresql://harness@127.0.0.1/run")
    assert settings.journal_for(None) == "postgresql://harness@127.0.0.1/run"
    with pytest.raises(ConfigError, match="shared store: xdist workers"):
        settings.journal_for("gw0")
