import time

import httpx
import pytest


def notify_clevertap(url, bounced):  # your code: it reports bounces with httpx
    now = int(time.time())
    payload = [{"event": "hardbounce", "data": [{"e": e, "ts": now} for e in bounced]}]
    return httpx.post(url, json=payload)


@pytest.mark.ct_mock("https://callbacks.clevertap.test", strict=True)
def test_gone_address_is_a_hard_bounce(ct_mock):
    assert notify_clevertap(ct_mock.urls.bounce, ["gone@example.com"]).status_code == 200
    ct_mock.expect_callback("hardbounce", "gone@example.com")
