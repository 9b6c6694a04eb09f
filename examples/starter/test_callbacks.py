"""Starter tests written by ``harness init``: replace the parts marked "your integration"
with calls to your own code. ``pytest`` runs them as they are."""

from __future__ import annotations

import json
import smtplib
import time

import httpx
import pytest

from harness.pytest_plugin import ScenarioFixture, WorldFixture


def test_hardbounce_is_reported(ct_world: WorldFixture, integration_env: dict[str, str]) -> None:
    # Your integration: report a hard bounce to CleverTap (here, the fake one).
    payload = [{"event": "hardbounce", "data": [{"e": "gone@example.com", "ts": int(time.time())}]}]
    response = httpx.post(integration_env["HARNESS_BOUNCE_URL"], json=payload)
    assert response.status_code == 200

    ct_world.expect_callback("hardbounce", "gone@example.com", within=5)
    ct_world.expect_no_callbacks(event="unsubscribe")


@pytest.mark.ct_scenario("scenarios/mailbox-full.yaml")
def test_full_mailbox_is_a_softbounce(ct_scenario: ScenarioFixture) -> None:
    env = ct_scenario.sut_env()
    host, port = json.loads(env["HARNESS_MX_MAP"])["example.com"].split(":")

    # Your integration: deliver, get 452 (mailbox full: temporary), retry, get 452 again,
    # report a soft bounce. (Reporting after a single attempt is check CT510.)
    for _attempt in range(2):
        with smtplib.SMTP(host, int(port)) as smtp, pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("bounces@gw.test", ["full@example.com"], "Subject: x\r\n\r\nx\r\n")
    payload = [{"event": "softbounce", "data": [{"e": "full@example.com", "ts": int(time.time())}]}]
    httpx.post(env["HARNESS_BOUNCE_URL"], json=payload)

    assert ct_scenario.expect_scenario().passed
