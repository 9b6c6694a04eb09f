"""conftest.py of a test suite started by ``harness init``.

The clevertap-harness pytest plugin needs no import: installing the package (with the
``pytest`` extra) registers its fixtures: ``ct_world`` (a fake SMTP relay and a fake CleverTap,
reset before each test and checked after it), ``ct_server``, ``ct_mx``, ``ct_scenario`` (the
world of a ``@pytest.mark.ct_scenario("file.yaml")``) and ``ct_mock`` (the fake CleverTap as a
respx mock). This file is where your suite starts your own integration against that world.
"""

from __future__ import annotations

import pytest

from harness.pytest_plugin import WorldFixture


@pytest.fixture
def integration_env(ct_world: WorldFixture) -> dict[str, str]:
    """The environment to start your integration with: where the fake relay and the callback
    URLs are (HARNESS_RELAY, HARNESS_BOUNCE_URL, ...; see the integration contract)."""
    return ct_world.sut_env()
