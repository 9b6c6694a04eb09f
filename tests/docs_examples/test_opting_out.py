import httpx
import pytest

MS_TS = 1_700_000_000_000  # milliseconds: check CT303, an error


@pytest.mark.ct_checks(allow=["CT303"])
def test_a_bad_timestamp_is_rejected(ct_world):
    payload = [{"event": "hardbounce", "data": [{"e": "a@example.com", "ts": MS_TS}]}]
    response = httpx.post(ct_world.urls.bounce, json=payload)
    assert response.status_code == 400  # strict mode
    assert [v.code for v in ct_world.violations()] == ["CT303"]
