"""Reporting events to CleverTap: batching, both payload formats, retries."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from settings import Settings

__all__ = ["MAX_EVENTS_PER_CALL", "Event", "Reporter"]

log = logging.getLogger("gateway")

MAX_EVENTS_PER_CALL = 1000
"""CleverTap v2 rejects more than 1000 events per call with 400; legacy gets the same cap."""

BOUNCES = ("softbounce", "hardbounce")
_V2_TYPES = {
    "delivered": "delivered",
    "softbounce": "soft_bounce",
    "hardbounce": "hard_bounce",
    "unsubscribe": "unsubscribed",
    # A spam complaint: CleverTap unsubscribes the user; legacy has no such event and gets an
    # unsubscribe instead.
    "spam": "spam",
}
UNSUBSCRIBES = ("unsubscribe", "spam")


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    """delivered | softbounce | hardbounce | unsubscribe | spam"""
    email: str
    ts: int
    """Epoch seconds of the moment the gateway observed the event."""
    meta: str
    """The X-CleverTap_META of the message, echoed unchanged (v2 only)."""
    description: str


def _chunks(events: Sequence[Event]) -> Iterator[Sequence[Event]]:
    for start in range(0, len(events), MAX_EVENTS_PER_CALL):
        yield events[start : start + MAX_EVENTS_PER_CALL]


def _required(url: str | None, name: str) -> str:
    if url is None:  # load_settings() refuses such settings; this guards other callers
        raise ValueError(f"{name} is not set")
    return url


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Reporter:
    """Collects events for one batching window, then POSTs them; one batch at a time, in order."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self._settings = settings
        self._client = client
        self._pending: list[Event] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._unsent: list[Event] = []
        self._task: asyncio.Task[None] | None = None
        self._echoed: set[Event] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reporter")

    def report(self, event: Event) -> None:
        """Queue *event* for the next batch."""
        # BUG(no_unsubscribe): the click is honoured on the page but CleverTap never hears of it.
        if self._settings.bug == "no_unsubscribe" and event.kind == "unsubscribe":
            return
        # BUG(punycode_address): addresses "normalised" to ASCII when stored, reported so.
        if self._settings.bug == "punycode_address":
            local, _, domain = event.email.rpartition("@")
            event = dataclasses.replace(event, email=f"{local}@{domain.encode('idna').decode()}")
        self._pending.append(event)
        self._wake.set()

    async def close(self, grace: float) -> None:
        """Flush what is queued (at most *grace* seconds), then stop. Lost events are logged."""
        self._closing.set()
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            lost = self._unsent + self._pending
            log.error(
                "shutdown: %d event(s) NOT reported (flush exceeded %.1f s): %s",
                len(lost),
                grace,
                ", ".join(f"{e.kind} {e.email}" for e in lost),
            )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._closing.is_set():
                # The window starts at the first event, so a burst goes out as one batch.
                try:
                    await asyncio.wait_for(self._closing.wait(), self._settings.batch_window)
                except TimeoutError:
                    pass
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._send(batch)
            if self._closing.is_set() and not self._pending:
                return

    async def _send(self, batch: list[Event]) -> None:
        self._unsent = list(batch)
        for url, payload, events in self._payloads(batch):
            await self._post(url, payload, events)
            del self._unsent[: len(events)]
        # BUG(double_report): every bounce goes out a second time, in a POST of its own.
        if self._settings.bug == "double_report":
            for url, payload, events in self._payloads([e for e in batch if e.kind in BOUNCES]):
                await self._post(url, payload, events)
        # BUG(late_double_report): the bounces are queued again 0.7 s later, once each.
        if self._settings.bug == "late_double_report":
            again = [e for e in batch if e.kind in BOUNCES and e not in self._echoed]
            self._echoed.update(again)
            for event in again:
                asyncio.get_running_loop().call_later(0.7, self.report, event)
        self._unsent = []

    def _payloads(self, batch: Sequence[Event]) -> Iterator[tuple[str, Any, Sequence[Event]]]:
        """(url, JSON payload, events in it) per call; events keep their order within a call."""
        settings = self._settings
        if settings.callback_format == "v2":
            v2_url = _required(settings.v2_url, "HARNESS_V2_URL")
            for chunk in _chunks(batch):
                success: list[dict[str, str]] = []
                failed: list[dict[str, str]] = []
                for event in chunk:
                    item = {"type": _V2_TYPES[event.kind], "email": event.email, "meta": event.meta}
                    if event.kind == "delivered":
                        success.append(item)
                    else:
                        # Every type that changes the user's standing (bounces, unsubscribed)
                        # goes to "failed"; "success" is for delivered only.
                        failed.append({**item, "description": event.description})
                payload = {"version": "v2", "events": {"success": success, "failed": failed}}
                yield v2_url, payload, chunk
            return
        bounce_url = _required(settings.bounce_url, "HARNESS_BOUNCE_URL")
        unsubscribe_url = _required(settings.unsubscribe_url, "HARNESS_UNSUBSCRIBE_URL")
        # BUG(legacy_delivered): deliveries go to the bounce URL too, as "delivered".
        kinds = (*BOUNCES, "delivered") if settings.bug == "legacy_delivered" else BOUNCES
        bounces = [e for e in batch if e.kind in kinds]
        for chunk in _chunks(bounces):
            groups = [
                {"event": kind, "data": [self._legacy_item(e) for e in chunk if e.kind == kind]}
                for kind in kinds
            ]
            yield bounce_url, [g for g in groups if g["data"]], chunk
        unsubscribes = [e for e in batch if e.kind in UNSUBSCRIBES]
        for chunk in _chunks(unsubscribes):
            items = [self._legacy_item(e) for e in chunk]
            yield unsubscribe_url, [{"event": "unsubscribe", "data": items}], chunk

    def _legacy_item(self, event: Event) -> dict[str, Any]:
        ts = event.ts
        # BUG(ms_timestamps): milliseconds where CleverTap wants seconds.
        if self._settings.bug == "ms_timestamps":
            ts = event.ts * 1000
        # BUG(tz_offset): the local wall clock of Asia/Kolkata (UTC+5:30) read as if it were UTC.
        if self._settings.bug == "tz_offset":
            ts = event.ts + 19800
        # BUG(float_ts): the clock read again, unrounded.
        if self._settings.bug == "float_ts":
            return {"e": event.email, "ts": time.time()}
        return {"e": event.email, "ts": ts}

    async def _post(self, url: str, payload: Any, events: Sequence[Event]) -> None:
        body = json.dumps(payload).encode()
        what = f"{len(events)} event(s) to {url}"
        headers = {"Content-Type": "application/json"}
        # BUG(no_content_type): the body is JSON, but nothing says so.
        if self._settings.bug == "no_content_type":
            headers = {}
        delays = self._settings.callback_retry
        # BUG(no_retry): one attempt, whatever happens.
        if self._settings.bug == "no_retry":
            delays = ()
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:  # refused, reset, timeouts
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    log.info("callback sent: %s (HTTP %d)", what, response.status_code)
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    # Another 4xx will not get better by resending the same body.
                    log.error(
                        "callback REJECTED, not retried: %s: %s %s; payload %s",
                        what,
                        problem,
                        response.text[:300],
                        body.decode(),
                    )
                    return
                retry_after = _retry_after(response.headers.get("Retry-After"))
                # BUG(ignore_retry_after): the own schedule wins over what the server asked.
                if self._settings.bug == "ignore_retry_after":
                    retry_after = None
            if attempt > len(delays):
                log.error(
                    "callback FAILED after %d attempt(s): %s: %s; payload %s",
                    attempt,
                    what,
                    problem,
                    body.decode(),
                )
                return
            delay = delays[attempt - 1]
            if retry_after is not None:
                delay = min(retry_after, self._settings.retry_after_cap)
            # BUG(no_backoff): straight back at an endpoint that just failed.
            if self._settings.bug == "no_backoff":
                delay = 0.0
            log.warning("callback retry in %.2f s: %s: %s", delay, what, problem)
            await asyncio.sleep(delay)
