"""The real-MTA suite: one Postfix run with every catalog mode, shared by all workers.

Under pytest-xdist each worker is its own process with its own session fixtures; the relay run
takes half a minute, so the first worker to need it runs it under a file lock and leaves the
result (plain JSON) next to the workers' temporary directories, and the others read it.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any

import pytest

from tests.realmta.postfix import postfix_missing


@pytest.fixture(scope="session")
def relay_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    missing = postfix_missing()
    if missing is not None:  # pragma: no cover - the modules skip first
        pytest.skip(missing)
    from tests.realmta.relay import run_relay

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return run_relay()
    shared = tmp_path_factory.getbasetemp().parent
    result_file = shared / "realmta-relay.json"
    with open(shared / "realmta-relay.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result_file.exists():
            return dict(json.loads(result_file.read_text()))
        result = run_relay()
        result_file.write_text(json.dumps(result))
        return result
