"""Fixtures shared by the fake CleverTap's tests: one real server per test module."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from tests.clevertap.parsers import PARSERS


@pytest.fixture(scope="module", params=PARSERS)
def server(request: pytest.FixtureRequest) -> Iterator[CleverTapServer]:
    """A real fake CleverTap on 127.0.0.1 (port 0), started once per test module and parser."""
    with CleverTapServer(ServerSettings(http_parser=request.param)) as ct:
        yield ct


@pytest.fixture
def ct(server: CleverTapServer) -> CleverTapServer:
    """The module's server, as new: no faults, empty journal, no duplicate history."""
    server.set_faults()
    server.reset()
    return server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c
