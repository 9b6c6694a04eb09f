import time

import httpx
from hypothesis import HealthCheck, given, settings

from harness import strategies as hs


# ct_world resets itself before every example (and checks after each): the health check that
# warns about function-scoped fixtures does not apply to it.
@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hs.addresses(idn=True, quoted=True))
def test_every_address_is_accepted(ct_world, address):
    payload = [{"event": "hardbounce", "data": [{"e": address, "ts": int(time.time())}]}]
    assert httpx.post(ct_world.urls.bounce, json=payload).status_code == 200
    ct_world.expect_callback("hardbounce", address, within=5)
