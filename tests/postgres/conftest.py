"""A real PostgreSQL server for the shared-journal tests, started from the installed binaries.

One server per test session (per xdist worker), one fresh database per test. Skipped, with the
reason, where the binaries or psycopg are missing; ``.ci/run`` installs the binaries.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from harness.pgcluster import Cluster, ClusterUnavailable

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install '.[postgres]'")
    try:
        cluster = Cluster().start()
    except ClusterUnavailable as exc:
        pytest.skip(f"no PostgreSQL server to test against: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A new, empty database on the session's server; its URL."""
    return pg_cluster.create_database(f"journal_{os.getpid()}_{next(_names)}")
