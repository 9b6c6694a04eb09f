import json
import smtplib
import time

import httpx
import pytest


@pytest.mark.ct_scenario("scenarios/mailbox-full.yaml")
def test_full_mailbox_is_a_softbounce(ct_scenario):
    env = ct_scenario.sut_env()
    host, port = json.loads(env["HARNESS_MX_MAP"])["example.com"].split(":")

    # What your integration would do: try to deliver, get 452 (temporary), try again later,
    # get 452 again, report a soft bounce. (Reporting after one attempt is CT510.)
    for _attempt in range(2):
        with smtplib.SMTP(host, int(port)) as smtp, pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("bounces@gw.test", ["full@example.com"], "Subject: x\r\n\r\nx\r\n")
    payload = [{"event": "softbounce", "data": [{"e": "full@example.com", "ts": int(time.time())}]}]
    httpx.post(env["HARNESS_BOUNCE_URL"], json=payload)

    verdict = ct_scenario.expect_scenario()  # also judged after the test if not called
    assert verdict.passed
