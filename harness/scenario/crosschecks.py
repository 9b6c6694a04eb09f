"""Cross-checks (CT5xx): callbacks compared with what really happened in the mail world.

The payload checks (CT1xx-CT4xx) look at one request; these look at the whole journal of a run.
:class:`Facts` indexes it once: per recipient, every observation the fake mail world made (RCPT
and DATA replies with the class it decided, accepted messages, dropped messages, DSNs, hosts that
were down), the runner's clicks and sent messages, and every event of every callback request.
:func:`cross_check` then runs the checks registered below over the *accepted* callbacks (status
2xx): those are the ones CleverTap would act on. A faulted or rejected request is not checked
here; the integration has to send it again, and the resend is checked.

What counts as "the real event" of a recipient, case by case:

- a reply from a fake MX or relay (any stage): an ``SmtpReply`` record, journaled when the reply
  was given (so a session still open counts), whose ``class`` already applies the scenario's
  overrides; greylisting and other retries give several, in time order, and the last one before
  the callback decides the class; protocol replies to RCPT (503, 530) are attempts;
- accept-then-bounce: the message is accepted (``SmtpMessage``), and the DSN entry is the real
  event; its class is the one the mail world decided for the ``later`` stage;
- a connection dropped mid-DATA or after the dot: the ``SmtpClose`` record's ``dropped_message``;
- a host that is down: ``refused`` leaves no session at all, so the scenario's ``server_down``
  (by domain), runtime ``host_down`` notes and sessions played by a server-down variant all count
  as an attempt whose class is the catalog's class of the variant (soft). A host whose domains
  cannot be told (it never served anything) is assumed to serve every domain that no other host
  was seen serving: a cross-check must never call such a bounce "never attempted".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.checks import Check, Severity, Violation, register
from harness.journal import Entry
from harness.records import (
    Callback,
    Click,
    Dsn,
    HostChange,
    Sent,
    SmtpClose,
    SmtpMessage,
    SmtpOpen,
    SmtpReply,
)
from harness.smtp.catalog import CATALOG, BounceClass
from harness.vocab import CLASS_OF_EVENT, address_key

if TYPE_CHECKING:
    from harness.scenario.model import Scenario

__all__ = [
    "CLASS_OF_EVENT",
    "CrossCheckConfig",
    "Facts",
    "Observation",
    "ReportedEvent",
    "cross_check",
]

BOUNCES = frozenset({"hard", "soft"})
# Server-down variants that fail delivery ("slow" answers, late: not a failure).
_DOWN_VARIANTS = frozenset(
    name for name, mode in CATALOG.items() if mode.server_down and mode.bounce_class != "none"
)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_TS_UNIT_LIMIT = 10**11  # CT303 territory: not seconds, so no window to compare with


@dataclass(frozen=True, slots=True)
class CrossCheckConfig:
    """Settings of the cross-checks (seconds)."""

    ts_skew: float = 5.0
    """Slack on both sides of the window a ``ts`` must fall in: clocks of different processes,
    and legacy ``ts`` being whole seconds."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing the mail world saw happen to one recipient."""

    seq: int
    """The journal entry that proves it."""
    kind: str
    """``reply`` (a failure reply), ``attempt`` (a recipient accepted at RCPT or only tried),
    ``accepted`` (a message accepted with 250), ``dropped``, ``dsn`` or ``host_down``."""
    start: float
    end: float
    """When it happened: between ``start`` and ``end`` (a session's span; equal for points)."""
    bounce_class: str | None
    """``soft``, ``hard`` or ``none`` as the mail world decided; None when unknown."""
    failed: bool
    detail: str
    """A readable account: ``452 4.2.2 ... at rcpt (mailbox_full, attempt 2) on mx1``."""


@dataclass(frozen=True, slots=True)
class ReportedEvent:
    """One event of one callback request, valid or not, with what the request got back."""

    seq: int
    index: int
    """Its position in the entry's ``events``."""
    at: float
    endpoint: str
    event: str
    email: str
    ts: int | None
    meta: str | None
    status: int | None
    fault: str | None
    codes: tuple[str, ...]
    """The codes of the violations the payload checks found in the request."""

    @property
    def accepted(self) -> bool:
        """True when the fake CleverTap answered 2xx: CleverTap would have taken it."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def what(self) -> str | None:
        """``hard``, ``soft``, ``unsubscribe``, ``delivered``, ``spam`` or None (unknown)."""
        return CLASS_OF_EVENT.get(self.event)

    @property
    def address(self) -> str:
        return address_key(self.email)

    def describe(self) -> str:
        """``hardbounce a@x.test (seq 12, 200)``."""
        answer = str(self.status) if self.status is not None else "no answer"
        if self.fault:
            answer += f", fault {self.fault}"
        codes = f", {', '.join(self.codes)}" if self.codes else ""
        return f"{self.event or '?'} {self.email or '?'} (seq {self.seq}, {answer}{codes})"

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "endpoint": self.endpoint,
            "event": self.event,
            "email": self.email,
            "ts": self.ts,
            "meta": self.meta,
            "status": self.status,
            "fault": self.fault,
            "codes": list(self.codes),
        }


@dataclass
class _Down:
    """A host seen down: by a NOTE, by sessions of a server-down variant, or by the scenario."""

    variant: str
    start: float
    seqs: list[int] = field(default_factory=list)


@dataclass
class Facts:
    """The journal of one run, indexed for judging. Build it with :meth:`from_entries`."""

    started: float | None = None
    observations: dict[str, list[Observation]] = field(default_factory=dict)
    clicks: dict[str, list[tuple[Entry, Click]]] = field(default_factory=dict)
    sent: dict[str, list[Entry]] = field(default_factory=dict)
    """Recipient -> SENT entries that include it."""
    metas: dict[str, list[tuple[int, frozenset[str]]]] = field(default_factory=dict)
    """X-CleverTap_META value -> (seq, recipients) of the SENT/SMTP_MESSAGE entries carrying it."""
    events: list[ReportedEvent] = field(default_factory=list)
    """Every event of every callback request, in journal order."""
    callbacks: dict[int, tuple[Entry, Callback]] = field(default_factory=dict)
    host_domains: dict[str, set[str]] = field(default_factory=dict)
    """Domains each host was seen serving (from the recipients of its sessions)."""
    down_hosts: dict[str, _Down] = field(default_factory=dict)
    down_domains: dict[str, _Down] = field(default_factory=dict)
    """Domains the scenario declares down (``*`` for a relay that is down)."""

    @classmethod
    def from_entries(
        cls, entries: Iterable[Entry], *, scenario: Scenario | None = None, started: float | None
    ) -> Facts:
        """Index *entries* (one run's). *scenario* tells which domains were down from the start."""
        facts = cls(started=started)
        later_class: dict[str, str] = {}
        dsns: list[tuple[Entry, Dsn]] = []
        sessions: dict[str, tuple[float, str | None]] = {}
        for entry in entries:
            record = entry.data
            if isinstance(record, SmtpReply):
                facts._reply(entry, record, sessions, later_class)
            elif isinstance(record, SmtpOpen):
                sessions[record.session] = (entry.at, record.variant)
                if record.variant in _DOWN_VARIANTS:
                    down = facts.down_hosts.setdefault(record.host, _Down(record.variant, entry.at))
                    down.seqs.append(entry.seq)
            elif isinstance(record, SmtpClose):
                facts._close(entry, record)
            elif isinstance(record, SmtpMessage):
                facts._message(entry, record)
            elif isinstance(record, Dsn):
                dsns.append((entry, record))
            elif isinstance(record, Callback):
                facts._callback(entry, record)
            elif isinstance(record, Click):
                facts.clicks.setdefault(address_key(record.recipient), []).append((entry, record))
            elif isinstance(record, Sent):
                facts._sent(entry, record)
            elif isinstance(record, HostChange) and record.state == "down":
                variant = str(record.variant)
                if variant in _DOWN_VARIANTS:
                    down = facts.down_hosts.setdefault(record.host, _Down(variant, entry.at))
                    down.seqs.append(entry.seq)
        # A DSN can be journaled before everything about its message is known, so DSNs are
        # read once every decision is.
        for entry, dsn in dsns:
            facts._dsn(entry, dsn, later_class)
        if scenario is not None:
            facts._declared_down(scenario)
        for found in facts.observations.values():
            found.sort(key=lambda o: (o.start, o.seq))
        return facts

    # -- indexing ------------------------------------------------------------------------------

    def _add(self, address: str, observation: Observation) -> None:
        self.observations.setdefault(address_key(address), []).append(observation)

    def _serves(self, host: str, address: str) -> None:
        self.host_domains.setdefault(host, set()).add(address.rpartition("@")[2].lower())

    def _reply(
        self,
        entry: Entry,
        record: SmtpReply,
        sessions: Mapping[str, tuple[float, str | None]],
        later_class: dict[str, str],
    ) -> None:
        at = entry.at
        address = address_key(record.recipient)
        self._serves(record.host, address)
        how = ", ".join(
            str(x)
            for x in (record.mode, f"attempt {record.attempt}" if record.attempt else None)
            if x is not None
        )
        text = f"{record.reply} at {record.stage}" + (f" ({how})" if how else "")
        where = f" on {record.host}"
        if record.stage == "later":
            later_class[address] = str(record.bounce_class)
            self._add(
                address,
                Observation(entry.seq, "attempt", at, at, None, False, f"{text}, a DSN follows"),
            )
        elif record.failed and record.bounce_class is not None:
            self._add(
                address,
                Observation(entry.seq, "reply", at, at, record.bounce_class, True, text + where),
            )
        else:
            # Accepted at RCPT (acceptance of the message is its SmtpMessage record), or a
            # protocol reply (503, 530) that decides nothing about the address: an attempt.
            self._add(address, Observation(entry.seq, "attempt", at, at, None, False, text + where))

    def _close(self, entry: Entry, record: SmtpClose) -> None:
        dropped = record.dropped_message
        if dropped is None:
            return
        start = record.started or entry.at
        klass = _variant_class(record.variant)
        when = "after the final dot" if dropped.after_dot else "during DATA"
        for recipient in dropped.recipients:
            self._serves(record.host, recipient)
            self._add(
                recipient,
                Observation(
                    entry.seq,
                    "dropped",
                    start,
                    entry.at,
                    klass,
                    True,
                    f"connection dropped {when} ({record.variant}) on {record.host}",
                ),
            )

    def _message(self, entry: Entry, record: SmtpMessage) -> None:
        recipients: set[str] = set()
        for recipient in record.recipients:
            address = address_key(recipient.address)
            recipients.add(address)
            self._serves(record.host, address)
            self._add(
                address,
                Observation(
                    entry.seq,
                    "accepted",
                    entry.at,
                    entry.at,
                    "none",
                    False,
                    f"accepted as {record.id} on {record.host}",
                ),
            )
        meta = record.x_clevertap_meta
        if meta is not None:
            # Long header lines may arrive folded; unfolding (RFC 5322 2.2.3) restores the value.
            unfolded = _FOLD.sub("", meta)
            self.metas.setdefault(unfolded, []).append((entry.seq, frozenset(recipients)))

    def _dsn(self, entry: Entry, record: Dsn, later_class: Mapping[str, str]) -> None:
        delivered = "delivered to the intake" if record.ok else "NOT delivered to the intake"
        for report in record.recipients:
            if report.action not in ("failed", "delayed"):
                continue
            klass = later_class.get(address_key(report.recipient)) or _status_class(
                report.action, report.status
            )
            self._add(
                report.recipient,
                Observation(
                    entry.seq,
                    "dsn",
                    entry.at,
                    entry.at,
                    klass,
                    True,
                    f"DSN {report.action} {report.status} ({record.dialect}), {delivered}",
                ),
            )

    def _callback(self, entry: Entry, record: Callback) -> None:
        self.callbacks[entry.seq] = (entry, record)
        codes = record.codes
        fault = record.fault.spec if record.fault is not None else None
        for index, event in enumerate(record.events):
            self.events.append(
                ReportedEvent(
                    seq=entry.seq,
                    index=index,
                    at=entry.at,
                    endpoint=str(record.endpoint),
                    event=event.event,
                    email=event.email,
                    ts=event.ts,
                    meta=event.meta,
                    status=record.status,
                    fault=fault,
                    codes=codes,
                )
            )

    def _sent(self, entry: Entry, record: Sent) -> None:
        recipients = frozenset(address_key(a) for a in record.to)
        for address in recipients:
            self.sent.setdefault(address, []).append(entry)
        if record.meta is not None:
            self.metas.setdefault(record.meta, []).append((entry.seq, recipients))

    def _declared_down(self, scenario: Scenario) -> None:
        start = self.started if self.started is not None else 0.0
        for plan in scenario.hosts():
            variant = plan.host.server_down
            if variant not in _DOWN_VARIANTS:
                continue
            for domain in plan.domains or ["*"]:
                self.down_domains[domain] = _Down(str(variant), start)

    # -- questions -----------------------------------------------------------------------------

    def _down_for(self, address: str) -> _Down | None:
        domain = address.rpartition("@")[2].lower()
        declared = self.down_domains.get(domain) or self.down_domains.get("*")
        if declared is not None:
            return declared
        served = {d for domains in self.host_domains.values() for d in domains}
        for host, down in self.down_hosts.items():
            domains = self.host_domains.get(host)
            if domains is not None:
                if domain in domains:
                    return down
            elif host.lower() == domain or domain not in served:
                # A host never seen serving anything (refused from its first connection) may be
                # this domain's: assume so rather than call the bounce "never attempted".
                return down
        return None

    def history(self, address: str) -> list[Observation]:
        """Every observation for *address* in time order, a down host's included."""
        found = list(self.observations.get(address_key(address), ()))
        down = self._down_for(address)
        if down is not None:
            mode = CATALOG[down.variant]
            seq = down.seqs[0] if down.seqs else 0
            found.insert(
                0,
                Observation(
                    seq,
                    "host_down",
                    down.start,
                    down.start,
                    str(mode.bounce_class),
                    True,
                    f"its mail server is down ({down.variant}, {mode.enhanced})",
                ),
            )
        return found

    def attempted(self, address: str) -> bool:
        """True when the mail world saw any attempt at *address* (or its server was down)."""
        return bool(self.history(address))

    def final(self, address: str) -> Observation | None:
        """The last observation for *address* in the run: what finally happened to it."""
        found = [o for o in self.history(address) if o.kind != "attempt"]
        return found[-1] if found else None

    def failure_before(self, address: str, at: float) -> Observation | None:
        """The last failure for *address* that began at or before *at* (a callback's time)."""
        found = [o for o in self.history(address) if o.failed and o.start <= at]
        return found[-1] if found else None

    def accepted_before(self, address: str, at: float) -> Observation | None:
        """The last acceptance of a message for *address* at or before *at*."""
        found = [o for o in self.history(address) if o.kind == "accepted" and o.start <= at]
        return found[-1] if found else None

    def click_before(self, address: str, at: float) -> Entry | None:
        """The first click by *address* that reached the integration at or before *at*."""
        for entry, click in self.clicks.get(address_key(address), ()):
            if click.reached and entry.at <= at:
                return entry
        return None

    def real_window(self, event: ReportedEvent) -> tuple[float, float, int | None] | None:
        """When the real event behind *event* happened: (earliest, latest, evidence seq).

        A bounce: from the first observation of its recipient to the last failure before the
        callback. An unsubscribe: the first click. None when nothing real was found.
        """
        if event.what == "unsubscribe":
            click = self.click_before(event.email, event.at)
            return None if click is None else (click.at, click.at, click.seq)
        history = self.history(event.email)
        if not history:
            return None
        failure = self.failure_before(event.email, event.at)
        last = failure if failure is not None else history[-1]
        return (history[0].start, last.end, last.seq)

    def real_event(self, event: ReportedEvent) -> tuple[float, float, int] | None:
        """The span of the one real event *event* reports: (start, end, evidence seq).

        An unsubscribe: the first click before it. A bounce: the last failure before it (a
        reply, a DSN, a drop; for a host that was down all along, from the start of the run up
        to the callback, since its refused connections leave no trace). Delivered: the last
        acceptance before it. None when there is none.
        """
        if event.what == "unsubscribe":
            click = self.click_before(event.email, event.at)
            return None if click is None else (click.at, click.at, click.seq)
        if event.what == "delivered":
            accepted = self.accepted_before(event.email, event.at)
            return None if accepted is None else (accepted.start, accepted.end, accepted.seq)
        failure = self.failure_before(event.email, event.at)
        if failure is None:
            return None
        end = event.at if failure.kind == "host_down" else failure.end
        return (failure.start, end, failure.seq)


def _variant_class(variant: Any) -> str:
    mode = CATALOG.get(str(variant))
    return str(mode.bounce_class) if mode is not None else str(BounceClass.SOFT)


def _status_class(action: str, status: str) -> str | None:
    """The class of a DSN report whose ``later`` decision is unknown: the catalog's, by status."""
    if action == "delayed" or status.startswith("4"):
        return str(BounceClass.SOFT)
    for mode in CATALOG.values():
        if mode.enhanced == status and mode.bounce_class is not BounceClass.NONE:
            return str(mode.bounce_class)
    return None


# -- the checks ----------------------------------------------------------------------------------

_E = Severity.ERROR


def _example(*lines: str) -> str:
    return "\n".join(lines) + "\n"


NEVER_ATTEMPTED = register(
    Check(
        code="CT501",
        title="bounce for an address the integration never attempted",
        severity=_E,
        family="cross",
        example=_example(
            "# The integration tried ok@example.com only, then reported ghost@example.com.",
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", "recipient": "ok@example.com", '
            '"sender": "bounces@brand.test", "stage": "rcpt", "code": 250, "enhanced": "2.1.5", '
            '"reply": "250 2.1.5 Ok", "class": "none", "mode": "accept", "attempt": 1}',
            '2 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "ghost@example.com", 1700000001, null]]}',
        ),
        explanation="No fake MX host or relay saw a RCPT for the address, no DSN names it, and "
        "its mail server was not down: nothing in the mail world can have produced this bounce. "
        "Usually a bounce attributed to the wrong recipient (an address taken from the wrong "
        "line of a DSN, a VERP address decoded wrongly).",
    )
)
ACCEPTED_NOT_BOUNCED = register(
    Check(
        code="CT502",
        title="bounce for an address the mail world accepted",
        severity=_E,
        family="cross",
        example=_example(
            "# Greylisted on the first attempt, accepted on the retry, reported as a bounce.",
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", "recipient": "grey@example.com", '
            '"sender": "bounces@brand.test", "stage": "rcpt", "code": 450, "enhanced": "4.2.0", '
            '"reply": "450 4.2.0 Greylisted", "class": "soft", "mode": "greylist", "attempt": 1}',
            '1.5 smtp_reply {"host": "mx1", "session": "mx1-4", "recipient": "grey@example.com", '
            '"sender": "bounces@brand.test", "stage": "rcpt", "code": 250, "enhanced": "2.1.5", '
            '"reply": "250 2.1.5 Ok", "class": "none", "mode": "greylist", "attempt": 2}',
            '1.6 smtp_message {"host": "mx1", "session": "mx1-4", "id": "MX1000006", '
            '"sender": "bounces@brand.test", "recipients": [{"address": "grey@example.com"}]}',
            '2 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["softbounce", "grey@example.com", 1700000001, null]]}',
        ),
        explanation="The final outcome for the address is a message accepted with 250 and no "
        "DSN followed: the mail was delivered, whatever happened on earlier attempts. Reporting "
        "a temporary failure (greylisting, throttling) before the retries ran out, or a bounce "
        "for a DSN of another message, makes CleverTap count a failure that did not happen.",
    )
)
SOFT_AS_HARD = register(
    Check(
        code="CT503",
        title="soft bounce reported as hard",
        severity=_E,
        family="cross",
        example=_example(
            "# A full mailbox (soft) reported as a hard bounce.",
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", "recipient": "full@example.com", '
            '"sender": "bounces@brand.test", "stage": "rcpt", "code": 552, "enhanced": "5.2.2", '
            '"reply": "552 5.2.2 Mailbox full", "class": "soft", '
            '"mode": "mailbox_full_permanent", "attempt": 1}',
            '2 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "full@example.com", 1700000001, null]]}',
        ),
        explanation="The mail world classed the real failure as soft (the catalog's class of "
        "the failure mode, or the scenario's override) and the callback says hard. CleverTap "
        "marks a hard-bounced user unsubscribed: a full mailbox or a server outage would cost "
        "the customer a reachable user. RFC 3463 calls x.2.2 persistent transient.",
    )
)
HARD_AS_SOFT = register(
    Check(
        code="CT504",
        title="hard bounce reported as soft",
        severity=_E,
        family="cross",
        example=_example(
            "# An unknown user (hard) reported as a soft bounce.",
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", '
            '"recipient": "nobody@example.com", "sender": "bounces@brand.test", "stage": "rcpt", '
            '"code": 550, "enhanced": "5.1.1", "reply": "550 5.1.1 User unknown", '
            '"class": "hard", "mode": "invalid_address", "attempt": 1}',
            '2 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["softbounce", "nobody@example.com", 1700000001, null]]}',
        ),
        explanation="The mail world classed the real failure as hard (a permanent address "
        "failure) and the callback says soft. CleverTap keeps mailing a soft-bounced address, "
        "which hurts the sender's reputation with every campaign.",
    )
)
TS_OUTSIDE = register(
    Check(
        code="CT505",
        title="ts outside the window of the real event",
        severity=_E,
        family="cross",
        example=_example(
            "# The bounce happened at 1700000000.5; the callback says an hour earlier.",
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", '
            '"recipient": "nobody@example.com", "sender": "bounces@brand.test", "stage": "rcpt", '
            '"code": 550, "enhanced": "5.1.1", "reply": "550 5.1.1 User unknown", '
            '"class": "hard", "mode": "invalid_address", "attempt": 1}',
            '2 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "nobody@example.com", 1699996400, null]]}',
        ),
        explanation="A legacy `ts` must lie between the first thing the mail world saw for the "
        "address (its first attempt; for an unsubscribe, the click) and the moment the callback "
        "arrived, give or take `ts_skew` (5 s by default). Outside it the integration made the "
        "time up: a time zone applied twice, the campaign's send time, a constant.",
    )
)
TWICE = register(
    Check(
        code="CT506",
        title="the same bounce reported twice in the run",
        severity=_E,
        family="cross",
        example=_example(
            "# One hard bounce, reported in two accepted callbacks.",
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", '
            '"recipient": "nobody@example.com", "sender": "bounces@brand.test", "stage": "rcpt", '
            '"code": 550, "enhanced": "5.1.1", "reply": "550 5.1.1 User unknown", '
            '"class": "hard", "mode": "invalid_address", "attempt": 1}',
            '2 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "nobody@example.com", 1700000001, null]]}',
            '9000 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "nobody@example.com", 1700000001, null]]}',
        ),
        explanation="The same (event, address) arrived in two callbacks that were both accepted "
        "(2xx), however far apart (CT402 only looks within its window). CleverTap does not "
        "deduplicate, so the bounce counts twice. A resend after a 5xx or a dropped connection "
        "is not a duplicate: the first request was not accepted.",
    )
)
NO_CLICK = register(
    Check(
        code="CT507",
        title="unsubscribe that nobody clicked",
        severity=_E,
        family="cross",
        example=_example(
            "# reader@example.com clicked; other@example.com is reported too.",
            '1 click {"recipient": "reader@example.com", "via": "one_click", '
            '"url": "http://127.0.0.1:8080/u/1", "status": 200, "ok": true}',
            '2 callback {"endpoint": "unsubscribe", "path": "/callbacks/unsubscribe", '
            '"status": 200, "events": [["unsubscribe", "other@example.com", 1700000001, null]]}',
        ),
        explanation="An unsubscribe callback for an address for which no unsubscribe action "
        "(one-click POST, link, mailto) reached the integration before the callback. An "
        "unsubscribe applies to the whole account, so a spurious one silently loses a user.",
    )
)
META_UNKNOWN = register(
    Check(
        code="CT508",
        title="v2 meta matches no sent message",
        severity=_E,
        family="cross",
        example=_example(
            "# The integration echoed a meta that no message carried (here: truncated).",
            '0 sent {"message_id": "<1@brand.test>", "from": "news@brand.test", '
            '"to": ["nobody@example.com"], '
            '"meta": "nobody@example.com|harness|1700000000|1|0|wzrk_default|", "subject": "Hi", '
            '"ok": true, "reply": "250 ok"}',
            '2 callback {"endpoint": "v2", "path": "/callbacks/v2", "status": 200, '
            '"events": [["hard_bounce", "nobody@example.com", null, '
            '"nobody@example.com|harness|1700000000|1|"]]}',
        ),
        explanation="Every v2 event must echo, unchanged, the `X-CleverTap_META` header of the "
        "message it is about. The value matches neither a message the harness submitted nor a "
        "header a fake MX received, or it belongs to a message sent to someone else: CleverTap "
        'cannot tie the event to its campaign ("invalid meta").',
    )
)
DELIVERED_NOT_ACCEPTED = register(
    Check(
        code="CT509",
        title="delivered reported for a message no mail server accepted",
        severity=_E,
        family="cross",
        example=_example(
            "# The message was refused at RCPT, yet reported as delivered.",
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", '
            '"recipient": "nobody@example.com", "sender": "bounces@brand.test", "stage": "rcpt", '
            '"code": 550, "enhanced": "5.1.1", "reply": "550 5.1.1 User unknown", '
            '"class": "hard", "mode": "invalid_address", "attempt": 1}',
            '2 callback {"endpoint": "v2", "path": "/callbacks/v2", "status": 200, '
            '"events": [["delivered", "nobody@example.com", null, "m1"]]}',
        ),
        explanation="A v2 `delivered` event needs a message accepted (250 after DATA) for the "
        "address before the callback. A later DSN may still bounce it, and then a `delivered` "
        "followed by a bounce is right; a `delivered` for a message that was refused or never "
        "sent is not.",
    )
)


# -- running them --------------------------------------------------------------------------------


def cross_check(facts: Facts, *, config: CrossCheckConfig | None = None) -> list[Violation]:
    """Every CT5xx violation in the accepted callbacks of *facts*, in journal order."""
    config = config or CrossCheckConfig()
    found: list[Violation] = []
    reported: dict[tuple[str, str], ReportedEvent] = {}
    for event in facts.events:
        if not event.accepted or not event.email:
            continue
        what = event.what
        if what in BOUNCES:
            found.extend(_bounce(facts, event, what))
            key = (event.event, event.address)
            first = reported.get(key)
            if first is None:
                reported[key] = event
            elif first.seq != event.seq:  # twice in one payload is CT401
                found.append(
                    _violation(
                        facts,
                        TWICE,
                        event,
                        f"{event.event} for {event.email} was already reported in callback "
                        f"{first.seq}",
                        expected="one report per bounce",
                        seen=f"reports in callbacks {first.seq} and {event.seq}",
                        evidence=(first.seq, event.seq),
                    )
                )
        elif what == "unsubscribe" and facts.click_before(event.email, event.at) is None:
            clicks = facts.clicks.get(event.address, ())
            seen = (
                f"clicks only after the callback (seq {', '.join(str(c.seq) for c, _ in clicks)})"
                if clicks
                else "no click"
            )
            found.append(
                _violation(
                    facts,
                    NO_CLICK,
                    event,
                    f"{event.event} for {event.email}, but no unsubscribe action by that "
                    "recipient reached the integration before it",
                    expected="a click (one-click POST, link or mailto) before the callback",
                    seen=seen,
                    evidence=(event.seq, *(c.seq for c, _ in clicks)),
                )
            )
        elif what == "delivered" and facts.accepted_before(event.email, event.at) is None:
            failure = facts.failure_before(event.email, event.at)
            found.append(
                _violation(
                    facts,
                    DELIVERED_NOT_ACCEPTED,
                    event,
                    f"delivered for {event.email}, but no mail server accepted a message for it "
                    "before the callback",
                    expected="a message accepted with 250 before the callback",
                    seen=failure.detail if failure is not None else "no attempt at all",
                    evidence=(event.seq,) + ((failure.seq,) if failure is not None else ()),
                )
            )
        found.extend(_ts(facts, event, config))
        found.extend(_meta(facts, event))
    return found


def _bounce(facts: Facts, event: ReportedEvent, what: str) -> list[Violation]:
    history = facts.history(event.email)
    if not history:
        sent = facts.sent.get(event.address)
        seen = (
            f"SENT in seq {sent[0].seq}, but no RCPT at any fake MX or relay and no DSN"
            if sent
            else "no SENT entry, no RCPT at any fake MX or relay, no DSN"
        )
        return [
            _violation(
                facts,
                NEVER_ATTEMPTED,
                event,
                f"{event.event} for {event.email}, an address the integration never attempted",
                expected="an SMTP attempt or a DSN for the address",
                seen=seen,
                evidence=(event.seq, *(e.seq for e in sent or ())),
            )
        ]
    final = facts.final(event.email)
    if final is not None and final.kind == "accepted":
        earlier = [o.seq for o in history if o.failed]
        return [
            _violation(
                facts,
                ACCEPTED_NOT_BOUNCED,
                event,
                f"{event.event} for {event.email}, but the mail world accepted its message and "
                "never bounced it",
                expected="no bounce",
                seen=f"{event.event}; final outcome: {final.detail}",
                evidence=(event.seq, *earlier, final.seq),
            )
        ]
    failure = facts.failure_before(event.email, event.at)
    if failure is None or failure.bounce_class not in BOUNCES or failure.bounce_class == what:
        return []
    check = SOFT_AS_HARD if failure.bounce_class == "soft" else HARD_AS_SOFT
    return [
        _violation(
            facts,
            check,
            event,
            f"{event.event} for {event.email}, but the real failure is {failure.bounce_class}: "
            f"{failure.detail}",
            expected=f"a {failure.bounce_class} bounce",
            seen=f"{event.event} ({what})",
            evidence=(event.seq, failure.seq),
        )
    ]


def _ts(facts: Facts, event: ReportedEvent, config: CrossCheckConfig) -> list[Violation]:
    if event.ts is None or abs(event.ts) >= _TS_UNIT_LIMIT:
        return []
    if event.what not in BOUNCES and event.what != "unsubscribe":
        return []
    window = facts.real_window(event)
    if window is None:
        if event.what == "unsubscribe" or facts.started is None:
            return []  # CT507 or CT501 says what is wrong; there is no real event to time
        low, evidence = facts.started, None
    else:
        low, _, evidence = window
    earliest = math.floor(low - config.ts_skew)
    latest = event.at + config.ts_skew
    if earliest <= event.ts <= latest:
        return []
    if event.ts < earliest:
        what = "the click" if event.what == "unsubscribe" else "the first attempt at the address"
        off = f"{earliest - event.ts:.0f} s before {what}"
    else:
        off = f"{event.ts - latest:.0f} s after the callback arrived"
    return [
        _violation(
            facts,
            TS_OUTSIDE,
            event,
            f"ts {event.ts} of {event.event} for {event.email} is {off}",
            expected=f"{earliest} <= ts <= {math.floor(latest)}",
            seen=str(event.ts),
            evidence=(event.seq,) + ((evidence,) if evidence else ()),
            extra={"earliest": earliest, "latest": math.floor(latest)},
        )
    ]


def _meta(facts: Facts, event: ReportedEvent) -> list[Violation]:
    if event.endpoint != "v2" or not event.meta:
        return []
    carriers = facts.metas.get(event.meta)
    if not carriers:
        own = [m for m, _ in _metas_of(facts, event.address)]
        return [
            _violation(
                facts,
                META_UNKNOWN,
                event,
                f"meta of {event.event} for {event.email} matches no X-CleverTap_META of a sent "
                "message",
                expected=repr(own[0]) if own else "the X-CleverTap_META of a sent message",
                seen=repr(event.meta),
                evidence=(event.seq, *(s for _, s in _metas_of(facts, event.address))),
            )
        ]
    recipients = set().union(*(r for _, r in carriers))
    if event.address in recipients or not recipients:
        return []
    return [
        _violation(
            facts,
            META_UNKNOWN,
            event,
            f"meta of {event.event} for {event.email} belongs to a message sent to "
            f"{', '.join(sorted(recipients))}",
            expected=f"the X-CleverTap_META of the message sent to {event.email}",
            seen=repr(event.meta),
            evidence=(event.seq, *(s for s, _ in carriers)),
        )
    ]


def _metas_of(facts: Facts, address: str) -> list[tuple[str, int]]:
    return [
        (meta, seq)
        for meta, carriers in facts.metas.items()
        for seq, recipients in carriers
        if address in recipients
    ]


def _violation(
    facts: Facts,
    check: Check,
    event: ReportedEvent,
    message: str,
    *,
    expected: str,
    seen: str,
    evidence: Sequence[int],
    extra: Mapping[str, Any] | None = None,
) -> Violation:
    return Violation(
        code=check.code,
        severity=check.severity,
        path=_event_path(facts, event),
        message=message,
        expected=expected,
        seen=seen,
        evidence=tuple(dict.fromkeys(evidence)),
        extra={"callback": event.seq, **(extra or {})},
    )


def _event_path(facts: Facts, event: ReportedEvent) -> str:
    """The JSON path of *event* in its request body (the journal keeps events, not paths)."""
    found = facts.callbacks.get(event.seq)
    if found is None or found[1].body_base64:
        return "$"
    entry, record = found
    body = record.body
    # Imported here: only needed for the few events that have a violation.
    from harness.clevertap.inspect import Endpoint, inspect

    try:
        inspection = inspect(
            body.encode(), endpoint=Endpoint(event.endpoint), now=entry.at, seq=entry.seq
        )
    except ValueError:
        return "$"
    if event.index < len(inspection.events):
        return inspection.events[event.index].path
    return "$"
