import time

import httpx


def test_hardbounce_is_reported(ct_world):
    # Play the integration under test: report a hard bounce to the fake CleverTap.
    payload = [{"event": "hardbounce", "data": [{"e": "gone@example.com", "ts": int(time.time())}]}]
    response = httpx.post(ct_world.urls.bounce, json=payload)
    assert response.status_code == 200

    entry = ct_world.expect_callback("hardbounce", "gone@example.com", within=5)
    assert entry.data.endpoint == "bounce"
    ct_world.expect_no_callbacks(event="unsubscribe")
