import time

import httpx
import pytest


@pytest.mark.asyncio
async def test_unsubscribe_is_reported(ct_world):
    payload = [{"event": "unsubscribe", "data": [{"e": "bye@example.com", "ts": int(time.time())}]}]
    async with httpx.AsyncClient() as client:
        await client.post(ct_world.urls.unsubscribe, json=payload)
    await ct_world.expect_callback_async("unsubscribe", "bye@example.com")
