"""An integration's callback payload builder: the code a user fuzzes with harness.strategies.

It turns the bounces and unsubscribes an integration noticed into CleverTap's legacy callback
bodies: one array per URL, one event object per event name, ``ts`` in whole epoch seconds, and
each (event, address) once, however often it was noticed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

BOUNCES = ("softbounce", "hardbounce")


def build_legacy(noticed: Iterable[tuple[str, str, float]]) -> dict[str, bytes]:
    """``{"bounce": body, "unsubscribe": body}`` for (event, address, when) triples.

    *when* is a ``time.time()`` float; a URL with nothing to report is left out.
    """
    by_url: dict[str, dict[str, dict[str, tuple[str, int]]]] = {"bounce": {}, "unsubscribe": {}}
    for event, address, when in noticed:
        url = "bounce" if event in BOUNCES else "unsubscribe"
        items = by_url[url].setdefault(event, {})
        # CleverTap matches users by address, case-insensitively: report each one once, as
        # first spelt and with the first time it was noticed (whole seconds, never rounded up).
        items.setdefault(address.lower(), (address, int(when)))
    bodies = {}
    for url, events in by_url.items():
        if events:
            payload = [
                {"event": event, "data": [{"e": e, "ts": ts} for e, ts in items.values()]}
                for event, items in events.items()
            ]
            bodies[url] = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return bodies
