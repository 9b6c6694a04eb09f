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
  was seen serving: a cross-check must never call such a bounce "never attempted";
- a DSN whose ``Final-Recipient`` is not a recipient of the message it reports on (the queue id
  in ``Dsn.message``; aliasing at the next hop): the real event of the address CleverTap sent
  to, and the ``Final-Recipient`` is remembered as an alias (CT515);
- a delayed DSN and a success DSN (delivered, relayed, expanded) are not failures: they are
  observations of their own (CT513, CT514);
- a host playing ``slow`` is a working server that answers late: the connections the
  integration made to it are one ``slow`` observation, an attempt that failed nothing, even when
  the integration hung up before RCPT (a bounce after it is CT517, not CT501);
- an auto-reply (RFC 3834) is no failure and asks for no callback (CT520); a complaint (RFC 5965)
  is the real event of a ``spam`` or ``unsubscribe`` callback, whichever the scenario's
  ``clevertap.complaint_as`` maps it to (CT521-CT523), as a click is for an unsubscribe.

An attempt at an address is one SMTP transaction (MAIL to its end: the records'
``transaction``), not one connection: an integration that keeps its connections open, as Postfix
does, may retry on the connection that got the 4xx. A connection to a host that is down and
never got to MAIL is an attempt too.

Besides the accepted callbacks, three checks look at the whole run: callbacks resent too soon
(CT511, over every request), temporary failures never retried (CT510, over every recipient) and
complaints never reported (CT521).

A link scanner's fetches (a ``Click`` with ``via: scan``) are not an unsubscribe action: an
unsubscribe after a scan and no click is CT507, and says so. The integration's own doors are
probed too (CT6xx): a submission with a wrong password, a wrong user or no AUTH that the
integration accepted (a ``SubmissionProbe`` record) is CT601.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import idna

from harness.checks import Check, Severity, Violation, register
from harness.clevertap.faults import parse_fault
from harness.errors import ConfigError
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
    SubmissionProbe,
)
from harness.smtp.catalog import CATALOG, SLOW_DELAY, BounceClass
from harness.smtp.dialects import SUCCESS_ACTIONS
from harness.vocab import CLASS_OF_EVENT, MailReport, address_key, complaint_event

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
_DELIVERED = frozenset({"accepted", "dsn_success"})
_SLOW = "slow"  # the server-down variant that is no failure: a working server, answering late
_TS_UNIT_LIMIT = 10**11  # CT303 territory: not seconds, so no window to compare with


@dataclass(frozen=True, slots=True)
class CrossCheckConfig:
    """Settings of the cross-checks (seconds)."""

    ts_skew: float = 5.0
    """Slack on both sides of the window a ``ts`` must fall in: clocks of different processes,
    and legacy ``ts`` being whole seconds."""
    callback_backoff: float = 0.1
    """The least time between a failed callback (429, 5xx, dropped) without ``Retry-After`` and
    its resend (CT511). Half the first backoff of the example (0.2 s): less is no backoff at
    all, a resend as fast as the loop runs."""
    retry_after_cap: float = 5.0
    """A ``Retry-After`` is honoured up to this many seconds (the contract's cap, section 5.3):
    a resend after ``min(Retry-After, cap)`` is in time."""
    timing_slack: float = 0.05
    """Slack on the times of two requests the fake CleverTap journaled (timer resolution)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing the mail world saw happen to one recipient."""

    seq: int
    """The journal entry that proves it."""
    kind: str
    """``reply`` (a failure reply), ``attempt`` (a recipient accepted at RCPT or only tried),
    ``accepted`` (a message accepted with 250), ``dropped``, ``dsn`` (a failed DSN),
    ``dsn_delayed``, ``dsn_success`` (delivered, relayed, expanded), ``auto_reply``,
    ``complaint``, ``host_down`` or ``slow`` (connections to a host playing ``slow``: a working
    server that answers late)."""
    start: float
    end: float
    """When it happened: between ``start`` and ``end`` (a session's span; equal for points)."""
    bounce_class: str | None
    """``soft``, ``hard`` or ``none`` as the mail world decided; None when unknown."""
    failed: bool
    detail: str
    """A readable account: ``452 4.2.2 ... at rcpt (mailbox_full, attempt 2) on mx1``."""
    session: str | None = None
    """The SMTP connection it happened in; None for DSNs and for a host seen down without a
    connection."""
    temporary: bool = False
    """A failure the contract says to retry: a 4xx reply, a dropped connection, a host down."""
    transaction: int | None = None
    """The transaction in ``session`` (MAIL to its end): one transaction is one attempt, and a
    client that keeps its connection makes several in one session. None outside a transaction
    (a RCPT before MAIL), and in journals older than the field: the session is the attempt."""


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
    sessions: dict[str, float] = field(default_factory=dict)
    """Connections it took while down (session id -> when): each one an attempt."""
    closed: dict[str, tuple[float, str]] = field(default_factory=dict)
    """Session id -> (its duration, how it ended), for the ``slow`` variant's account."""
    delay: float | None = None
    """The ``slow`` variant's delay before every reply, when known."""


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
    slow_hosts: dict[str, _Down] = field(default_factory=dict)
    slow_domains: dict[str, _Down] = field(default_factory=dict)
    """Hosts seen playing ``slow``, domains the scenario declares slow: working servers that
    answer late; a connection to one is an attempt even when the client gave up before RCPT."""
    finished: float | None = None
    """How long the run is known to have gone on: the judge's end, or the last entry."""
    retry_budget: float | None = None
    """The scenario's retry budget (``HARNESS_RETRY_BUDGET``): the integration's whole retry
    schedule for one message fits in it, first attempt to giving up."""
    messages: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    """Queue id -> (seq, recipients) of every accepted message."""
    aliases: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """Key (:func:`_canon`) of a DSN's ``Final-Recipient`` that the message was not sent to ->
    (the recipient it was sent to, the DSN's seq, the message's seq)."""
    spelled: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Key (:func:`_canon`) -> (the address as CleverTap or the mail world first wrote it, seq)."""
    temporary: set[str] = field(default_factory=set)
    """Keys (:func:`_canon`) of the addresses that got a temporary failure reply or drop."""
    probes: list[tuple[Entry, SubmissionProbe]] = field(default_factory=list)
    """The submissions tried with bad credentials (CT601), in journal order."""
    complaint_event: str | None = None
    """The event a complaint must become (``clevertap.complaint_as`` of the scenario); None:
    the format's default, told by the callback's endpoint (v2 ``spam``, legacy ``unsubscribe``)."""
    report_window: float = 2.0
    """How long after a complaint reached the integration its callback may take (the
    scenario's ``expect.after_dsn``): a run that went on longer without it missed it (CT521)."""
    complaints: dict[str, list[Observation]] = field(default_factory=dict)
    """Key (:func:`_canon`) -> the complaints delivered to the integration's intake."""
    _sent_spelled: set[str] = field(default_factory=set, repr=False)
    _histories: dict[str, tuple[Observation, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_entries(
        cls,
        entries: Iterable[Entry],
        *,
        scenario: Scenario | None = None,
        started: float | None,
        finished: float | None = None,
    ) -> Facts:
        """Index *entries* (one run's). *scenario* tells which domains were down from the start
        and its retry budget; *finished* when the run ended (else its last entry)."""
        facts = cls(started=started, finished=finished)
        later_class: dict[str, str] = {}
        dsns: list[tuple[Entry, Dsn]] = []
        sessions: dict[str, tuple[float, str | None]] = {}
        for entry in entries:
            if facts.finished is None or entry.at > facts.finished:
                facts.finished = entry.at
            record = entry.data
            if isinstance(record, SmtpReply):
                facts._reply(entry, record, sessions, later_class)
            elif isinstance(record, SmtpOpen):
                sessions[record.session] = (entry.at, record.variant)
                if record.variant in _DOWN_VARIANTS:
                    down = facts.down_hosts.setdefault(record.host, _Down(record.variant, entry.at))
                    down.seqs.append(entry.seq)
                    down.sessions[record.session] = entry.at
                elif record.variant == _SLOW:
                    slow = facts.slow_hosts.setdefault(record.host, _Down(_SLOW, entry.at))
                    slow.seqs.append(entry.seq)
                    slow.sessions[record.session] = entry.at
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
            elif isinstance(record, SubmissionProbe):
                facts.probes.append((entry, record))
            elif isinstance(record, HostChange) and record.variant == _SLOW:
                if record.state == "down":
                    slow = facts.slow_hosts.setdefault(record.host, _Down(_SLOW, entry.at))
                    slow.delay = record.delay
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
            facts.retry_budget = scenario.retry_budget
            facts.complaint_event = scenario.clevertap.complaint_event
            facts.report_window = float(scenario.expect.after_dsn)
        for found in facts.observations.values():
            found.sort(key=lambda o: (o.start, o.seq))
        return facts

    # -- indexing ------------------------------------------------------------------------------

    def _add(self, key: str, observation: Observation) -> None:
        """File *observation* under *key* (a :func:`_canon` key)."""
        self.observations.setdefault(key, []).append(observation)
        if observation.temporary:
            self.temporary.add(key)

    def _serves(self, host: str, address: str) -> None:
        self.host_domains.setdefault(host, set()).add(address.rpartition("@")[2].lower())

    def _spell(self, key: str, address: str, seq: int, *, sent: bool = False) -> None:
        """Remember how *address* (*key*) was written: CleverTap's spelling (a SENT entry)
        first."""
        if sent and key not in self._sent_spelled:
            self._sent_spelled.add(key)
            self.spelled[key] = (address, seq)
        else:
            self.spelled.setdefault(key, (address, seq))

    def _reply(
        self,
        entry: Entry,
        record: SmtpReply,
        sessions: Mapping[str, tuple[float, str | None]],
        later_class: dict[str, str],
    ) -> None:
        at = entry.at
        address = _canon(record.recipient)
        self._serves(record.host, address)
        self._spell(address, record.recipient, entry.seq)
        how = ", ".join(
            str(x)
            for x in (record.mode, f"attempt {record.attempt}" if record.attempt else None)
            if x is not None
        )
        text = f"{record.reply} at {record.stage}" + (f" ({how})" if how else "")
        where = f" on {record.host}"

        def seen(kind: str, detail: str, bounce: str | None = None) -> None:
            self._add(
                address,
                Observation(
                    entry.seq,
                    kind,
                    at,
                    at,
                    bounce,
                    bounce is not None,
                    detail,
                    record.session,
                    temporary=bounce is not None and record.code < 500,
                    transaction=record.transaction,
                ),
            )

        if record.stage == "later":
            later_class[address] = str(record.bounce_class)
            seen("attempt", f"{text}, a DSN follows")
        elif record.failed and record.bounce_class is not None:
            seen("reply", text + where, record.bounce_class)
        else:
            # Accepted at RCPT (acceptance of the message is its SmtpMessage record), or a
            # protocol reply (503, 530) that decides nothing about the address: an attempt.
            seen("attempt", text + where)

    def _close(self, entry: Entry, record: SmtpClose) -> None:
        slow = self.slow_hosts.get(record.host) if record.variant == _SLOW else None
        if slow is not None:
            slow.closed[record.session] = (record.duration, record.end)
        dropped = record.dropped_message
        if dropped is None:
            return
        start = record.started or entry.at
        klass = _variant_class(record.variant)
        when = "after the final dot" if dropped.after_dot else "during DATA"
        for recipient in dropped.recipients:
            self._serves(record.host, recipient)
            self._add(
                _canon(recipient),
                Observation(
                    entry.seq,
                    "dropped",
                    start,
                    entry.at,
                    klass,
                    True,
                    f"connection dropped {when} ({record.variant}) on {record.host}",
                    record.session,
                    temporary=True,
                    transaction=dropped.transaction,
                ),
            )

    def _message(self, entry: Entry, record: SmtpMessage) -> None:
        recipients: set[str] = set()
        for recipient in record.recipients:
            address = _canon(recipient.address)
            recipients.add(address)
            self._serves(record.host, address)
            self._spell(address, recipient.address, entry.seq)
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
                    record.session,
                    transaction=record.transaction,
                ),
            )
        self.messages[record.id] = (entry.seq, tuple(r.address for r in record.recipients))
        meta = record.x_clevertap_meta
        if meta is not None:
            # Long header lines may arrive folded; unfolding (RFC 5322 2.2.3) restores the value.
            unfolded = _FOLD.sub("", meta)
            self.metas.setdefault(unfolded, []).append((entry.seq, frozenset(recipients)))

    def _dsn(self, entry: Entry, record: Dsn, later_class: Mapping[str, str]) -> None:
        # From when its delivery began: the integration may call back before it is journaled.
        at = min(entry.at, record.started) if record.started is not None else entry.at
        delivered = "delivered to the intake" if record.ok else "NOT delivered to the intake"
        message = self.messages.get(record.message) if record.message is not None else None
        if record.report is not MailReport.DSN:
            self._mail_report(entry, record, at, delivered)
            return
        for report in record.recipients:
            recipient = report.recipient
            if message is not None:
                seq, sent_to = message
                keys = {_canon(a) for a in sent_to}
                # Original-Recipient names the address sent to (RFC 3464) when it has one.
                sent = (
                    report.original if report.original and _canon(report.original) in keys else None
                )
                if sent is None and len(sent_to) == 1:
                    sent = sent_to[0]
                if _canon(recipient) not in keys and sent is not None:
                    # Aliasing at the next hop: the DSN names the address the mail ended up
                    # at; the real event is the one of the address the message was sent to.
                    self.aliases[_canon(recipient)] = (sent, entry.seq, seq)
                    recipient = sent
            detail = f"DSN {report.action} {report.status} ({record.dialect}), {delivered}"
            if report.action == "failed":
                klass = later_class.get(_canon(recipient)) or _status_class(report.status)
                observation = Observation(entry.seq, "dsn", at, entry.at, klass, True, detail)
            elif report.action == "delayed":
                observation = Observation(
                    entry.seq, "dsn_delayed", at, entry.at, None, False, detail
                )
            elif report.action in SUCCESS_ACTIONS:
                observation = Observation(
                    entry.seq, "dsn_success", at, entry.at, "none", False, detail
                )
            else:
                continue
            self._add(_canon(recipient), observation)

    def _mail_report(self, entry: Entry, record: Dsn, at: float, delivered: str) -> None:
        """An auto-reply or a complaint about the recipient(s) of *record*."""
        auto = record.report is MailReport.AUTO_REPLY
        for report in record.recipients:
            key = _canon(report.recipient)
            what = "auto-reply" if auto else "complaint"
            observation = Observation(
                entry.seq,
                str(record.report),
                at,
                entry.at,
                "none",
                False,
                f"{what} ({record.style}) from {report.recipient}, {delivered}",
            )
            self._add(key, observation)
            if not auto and record.ok:
                self.complaints.setdefault(key, []).append(observation)

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
        for address in record.to:
            self._spell(_canon(address), address, entry.seq, sent=True)
        for address in frozenset(address_key(a) for a in record.to):
            self.sent.setdefault(address, []).append(entry)
        if record.meta is not None:
            recipients = frozenset(_canon(a) for a in record.to)
            self.metas.setdefault(record.meta, []).append((entry.seq, recipients))

    def _declared_down(self, scenario: Scenario) -> None:
        start = self.started if self.started is not None else 0.0
        for plan in scenario.hosts():
            variant = plan.host.server_down
            if variant == _SLOW:
                delay = plan.host.slow_delay
                for domain in plan.domains or ["*"]:
                    self.slow_domains[domain] = _Down(
                        _SLOW, start, delay=SLOW_DELAY if delay is None else float(delay)
                    )
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
        if not self.down_hosts:
            return None
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
        # Every check of every event asks again; the facts no longer change once indexed.
        known = self._histories.get(address)
        if known is not None:
            return list(known)
        found = list(self.observations.get(_canon(address), ()))
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
                    temporary=True,
                ),
            )
        elif (slow := self._slow_account(address)) is not None:
            found.insert(0, slow)
        self._histories[address] = tuple(found)
        return found

    def _slow_account(self, address: str) -> Observation | None:
        """The connections the integration made to *address*'s host when that host plays
        ``slow`` (one observation for all of them), or None."""
        domain = address.rpartition("@")[2].lower()
        declared = self.slow_domains.get(domain) or self.slow_domains.get("*")
        served = {d for domains in self.host_domains.values() for d in domains}
        seen = [
            d
            for host, d in self.slow_hosts.items()
            if domain in self.host_domains.get(host, ())
            or (host not in self.host_domains and (host.lower() == domain or domain not in served))
        ]
        if not seen or (declared is None and not any(d.sessions for d in seen)):
            return None
        sessions = sorted(at for d in seen for at in d.sessions.values())
        if not sessions:
            return None
        closed = [c for d in seen for c in d.closed.values()]
        delay = next((d.delay for d in (declared, *seen) if d is not None and d.delay), None)
        late = f"{delay:g} s late" if delay is not None else "late"
        longest = max((duration for duration, _ in closed), default=0.0)
        by_client = sum(end in ("client_dropped", "quit") for _, end in closed)
        return Observation(
            min(s for d in seen for s in d.seqs),
            _SLOW,
            sessions[0],
            sessions[-1],
            "none",
            False,
            f"its mail server is slow, not down (every reply {late}): {len(sessions)} "
            f"connection(s), {by_client} ended by the integration, the longest after "
            f"{longest:.1f} s",
        )

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
        """The last acceptance of a message for *address* (by a fake MX, or a success DSN) at
        or before *at*."""
        found = [o for o in self.history(address) if o.kind in _DELIVERED and o.start <= at]
        return found[-1] if found else None

    def outcome_before(self, address: str, at: float) -> Observation | None:
        """The last observation for *address* at or before *at* that is more than an attempt."""
        found = [o for o in self.history(address) if o.kind != "attempt" and o.start <= at]
        return found[-1] if found else None

    def attempts(self, address: str, at: float = math.inf) -> int | None:
        """How many times *address* was tried up to *at*: its SMTP transactions (a connection
        reused for a retry makes a second one in the same session), and each connection to its
        host while that host was down; None when that cannot be told (its host refused every
        connection: refused connections leave no trace)."""
        tried = {
            (o.session, o.transaction)
            for o in self.observations.get(_canon(address), ())
            if o.session is not None and o.start <= at
        }
        seen = {session for session, _ in tried}
        down = self._down_for(address)
        if down is not None:
            domain = address.rpartition("@")[2].lower()
            # A domain the scenario declares down: the connections of the host seen down that
            # serves it (by name or by the recipients it saw), if any.
            hosts = (
                [down]
                if down.sessions
                else [
                    d
                    for host, d in self.down_hosts.items()
                    if host.lower() == domain or domain in self.host_domains.get(host, ())
                ]
            )
            for host in hosts:
                # A down host's connection with a transaction for the address is counted
                # above; one that never got that far (a 421 greeting, a tarpit) is an attempt.
                tried.update(
                    (s, None) for s, when in host.sessions.items() if when <= at and s not in seen
                )
            if not tried:
                return None
        return len(tried)

    def spelling(self, address: str) -> tuple[str, int] | None:
        """How *address* was written where it was first seen, its IDN domain in either form:
        (address, seq), CleverTap's spelling (a SENT entry) first."""
        return self.spelled.get(_canon(address))

    def name(self, address: str) -> str:
        """*address* as it was first written (:meth:`spelling`), for messages; itself when the
        run never saw it."""
        spelled = self.spelling(address)
        return spelled[0] if spelled is not None else address

    def click_before(self, address: str, at: float) -> Entry | None:
        """The first click by *address* that reached the integration at or before *at* (a link
        scanner's fetches are no click)."""
        for entry, click in self.clicks.get(address_key(address), ()):
            if click.acted and entry.at <= at:
                return entry
        return None

    def complaint_before(self, address: str, at: float) -> Observation | None:
        """The first complaint about *address* delivered to the integration at or before *at*."""
        for observation in self.complaints.get(_canon(address), ()):
            if observation.start <= at:
                return observation
        return None

    def unsubscribed_by(self, address: str, at: float) -> tuple[float, int] | None:
        """What made *address* unsubscribe by *at*: (when, seq) of its first click that reached
        the integration, else of its first complaint; None when neither happened."""
        click = self.click_before(address, at)
        if click is not None:
            return (click.at, click.seq)
        complaint = self.complaint_before(address, at)
        return None if complaint is None else (complaint.start, complaint.seq)

    def real_window(self, event: ReportedEvent) -> tuple[float, float, int | None] | None:
        """When the real event behind *event* happened: (earliest, latest, evidence seq).

        A bounce: the event that justifies it, the last failure before the callback (the
        DSN's arrival for accept-then-bounce, the final reply after retries); without one, from
        the first observation of the recipient. An unsubscribe or a spam report: the first
        click, else the first complaint. None when nothing real was found.
        """
        if event.what in ("unsubscribe", "spam"):
            why = self.unsubscribed_by(event.email, event.at)
            return None if why is None else (why[0], why[0], why[1])
        history = self.history(event.email)
        if not history:
            return None
        failure = self.failure_before(event.email, event.at)
        if failure is not None:
            return (failure.start, failure.end, failure.seq)
        return (history[0].start, history[-1].end, history[-1].seq)

    def real_event(self, event: ReportedEvent) -> tuple[float, float, int] | None:
        """The span of the one real event *event* reports: (start, end, evidence seq).

        An unsubscribe or a spam report: the first click (else complaint) before it. A bounce:
        the last failure before it (a
        reply, a DSN, a drop; for a host that was down all along, from the start of the run up
        to the callback, since its refused connections leave no trace). Delivered: the last
        acceptance before it. None when there is none.
        """
        if event.what in ("unsubscribe", "spam"):
            why = self.unsubscribed_by(event.email, event.at)
            return None if why is None else (why[0], why[0], why[1])
        if event.what == "delivered":
            accepted = self.accepted_before(event.email, event.at)
            return None if accepted is None else (accepted.start, accepted.end, accepted.seq)
        failure = self.failure_before(event.email, event.at)
        if failure is None:
            return None
        end = event.at if failure.kind == "host_down" else failure.end
        return (failure.start, end, failure.seq)


def _canon(address: str) -> str:
    """:func:`address_key` with an IDN domain in one form (A-labels, after UTS 46 mapping).

    The mail world may see ``user@xn--bcher-kva.example`` (an integration that converts the
    domain for a server without SMTPUTF8, as it may) for the ``user@bücher.example`` CleverTap
    sent to: one recipient, whose history must be one. Callback events keep ``address_key``,
    so that CT515 can tell the reported form from the one sent to.
    """
    key = address_key(address)
    local, at, domain = key.rpartition("@")
    if not at or (domain.isascii() and "xn--" not in domain):
        return key
    return f"{local}@{_ascii_domain(domain)}"


@lru_cache(maxsize=1024)
def _ascii_domain(domain: str) -> str:
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError:
        return domain  # not an IDN name at all: compared as written


def _variant_class(variant: Any) -> str:
    mode = CATALOG.get(str(variant))
    return str(mode.bounce_class) if mode is not None else str(BounceClass.SOFT)


def _status_class(status: str) -> str | None:
    """The class of a failed DSN whose ``later`` decision is unknown: the catalog's, by status."""
    if status.startswith("4"):
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
            "# Accepted at 0.6, bounced by a DSN at 15; the callback's ts is the send time.",
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", "recipient": "late@example.com", '
            '"sender": "bounces@brand.test", "stage": "later", "code": 250, "enhanced": "2.1.5", '
            '"reply": "250 2.1.5 Ok", "class": "hard", "mode": "invalid_address", "attempt": 1}',
            '0.6 smtp_message {"host": "mx1", "session": "mx1-1", "id": "MX1000003", '
            '"sender": "bounces@brand.test", "recipients": [{"address": "late@example.com"}]}',
            '15 dsn {"to": "bounces+late=example.com@gateway.test", "dialect": "postfix", '
            '"recipients": [{"recipient": "late@example.com", "action": "failed", '
            '"status": "5.1.1"}], "ok": true, "host": "mx1", "message": "MX1000003"}',
            '16 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "late@example.com", 1700000000, null]]}',
        ),
        explanation="A legacy `ts` must lie between the event that justifies the report and "
        "the moment the callback arrived, give or take `ts_skew` (5 s by default). That event "
        "is the DSN's arrival for a message accepted and bounced later, the last failure "
        "before the callback for a live failure (the final attempt, after retries: contract, "
        "section 4.1), the click for an unsubscribe; for a server that was down, when it was "
        "first seen down. Outside it the integration made the time up: the campaign's send "
        "time, the first attempt's time for a later failure, a time zone applied twice, a "
        "constant.",
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
        "unsubscribe applies to the whole account, so a spurious one silently loses a user. "
        "A link scanner's GET (a `scan` click: mail security gateways and previewers fetch "
        "every URL of a message) is no unsubscribe action: an integration that unsubscribes on "
        "a GET fails here, with the scan named in the violation.",
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


_W = Severity.WARNING
_REPLY_4XX = (
    '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", "recipient": "busy@example.com", '
    '"sender": "bounces@brand.test", "stage": "rcpt", "code": 450, "enhanced": "4.2.1", '
    '"reply": "450 4.2.1 Too many messages, slow down", "class": "soft", "mode": "throttle", '
    '"attempt": 1}'
)
_REPLY_550 = (
    '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", '
    '"recipient": "nobody@example.com", "sender": "bounces@brand.test", "stage": "rcpt", '
    '"code": 550, "enhanced": "5.1.1", "reply": "550 5.1.1 User unknown", '
    '"class": "hard", "mode": "invalid_address", "attempt": 1}'
)
_ACCEPTED = (
    '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", "recipient": "late@example.com", '
    '"sender": "bounces@brand.test", "stage": "rcpt", "code": 250, "enhanced": "2.1.5", '
    '"reply": "250 2.1.5 Ok", "class": "none", "mode": "accept", "attempt": 1}',
    '0.6 smtp_message {"host": "mx1", "session": "mx1-1", "id": "MX1000003", '
    '"sender": "bounces@brand.test", "recipients": [{"address": "late@example.com"}]}',
)

NEVER_RETRIED = register(
    Check(
        code="CT510",
        title="temporary failure never retried",
        severity=_E,
        family="cross",
        example=_example(
            "# busy@example.com got a 4xx on its only attempt and was reported soft at once.",
            _REPLY_4XX,
            '2 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["softbounce", "busy@example.com", 1700000000, null]]}',
        ),
        explanation="Every failure the address got was temporary (a 4xx reply, a connection "
        "dropped, its mail server down or silent) and the integration tried it only once: it "
        "reported a bounce after that single attempt, or, reporting nothing, it did not try "
        "again although the run went on for the whole retry budget after that attempt. The "
        "contract (section 4.1) says a temporary failure is retried on the integration's "
        "schedule and only then reported soft (greylisting and throttling go away on the "
        "second attempt), and the whole schedule fits in the retry budget "
        "(`HARNESS_RETRY_BUDGET`, section 4.4: `integration.retry_budget`, else `within` "
        "minus 5 s, at least half of `within`): past it, the second attempt is not late, it is "
        "missing. One SMTP transaction is one attempt (a retry may come on the same "
        "connection), and so is a connection to a host that is down. A host that refuses every "
        "connection leaves no trace of the attempts, so it is not judged here.",
    )
)
RESENT_TOO_SOON = register(
    Check(
        code="CT511",
        title="failed callback resent before its Retry-After or without backoff",
        severity=_E,
        family="cross",
        example=_example(
            "# A 429 with Retry-After: 2, and the same body resent 3 ms later.",
            _REPLY_550,
            '1 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 429, '
            '"fault": {"rule": 0, "action": "status", "spec": "429,retry_after=2,first=1", '
            '"retry_after": 2}, "events": [["hardbounce", "nobody@example.com", 1700000000, '
            "null]]}",
            '1.003 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "nobody@example.com", 1700000000, null]]}',
        ),
        explanation="A callback answered 429 or 5xx, or dropped by a fault, was resent (the "
        "next request to the same endpoint with the same body or one of its events) sooner "
        "than the `Retry-After` it was given (honoured up to `retry_after_cap`, 5 s, as the "
        "contract's section 5.3 allows), or, without a `Retry-After`, less than "
        "`callback_backoff` (0.1 s) after the failure: no backoff at all. The time counts "
        "from when the answer was sent (the fault's `delay` included). Hammering an endpoint "
        "that is overloaded keeps it down, and CleverTap rate-limits with 429.",
    )
)
UNSUBSCRIBED_TWICE = register(
    Check(
        code="CT512",
        title="the same unsubscribe reported twice in the run",
        severity=_E,
        family="cross",
        example=_example(
            "# One click, two accepted unsubscribe callbacks.",
            '1 click {"recipient": "reader@example.com", "via": "one_click", '
            '"url": "http://127.0.0.1:8080/u/1", "status": 200, "ok": true}',
            '2 callback {"endpoint": "unsubscribe", "path": "/callbacks/unsubscribe", '
            '"status": 200, "events": [["unsubscribe", "reader@example.com", 1700000001, null]]}',
            '9 callback {"endpoint": "unsubscribe", "path": "/callbacks/unsubscribe", '
            '"status": 200, "events": [["unsubscribe", "reader@example.com", 1700000008, null]]}',
        ),
        explanation="An unsubscribe for the same address arrived in two callbacks that were "
        "both accepted (2xx), whatever their `ts` and however far apart. Unsubscribing is "
        "per address and idempotent (contract, section 3.3): a second click, on the same or "
        "another message's link, answers 200 but sends no second callback. A resend after a "
        "failed request is not a duplicate.",
    )
)
DELAYED_AS_BOUNCE = register(
    Check(
        code="CT513",
        title="delayed DSN reported as a bounce",
        severity=_E,
        family="cross",
        example=_example(
            "# Accepted, then a DSN with Action: delayed; reported as a soft bounce.",
            *_ACCEPTED,
            '3 dsn {"to": "bounces+late=example.com@gateway.test", "dialect": "postfix", '
            '"recipients": [{"recipient": "late@example.com", "action": "delayed", '
            '"status": "4.4.7"}], "ok": true, "host": "mx1", "message": "MX1000003"}',
            '4 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["softbounce", "late@example.com", 1700000003, null]]}',
        ),
        explanation="The last thing the mail world said about the address before the callback "
        "was a DSN with `Action: delayed` (RFC 3464): the remote server is still trying, the "
        "message may yet be delivered. It is not a bounce, soft or hard (contract, section "
        "4.2); a bounce comes, if ever, with a later `Action: failed` DSN.",
    )
)
SUCCESS_AS_BOUNCE = register(
    Check(
        code="CT514",
        title="success DSN reported as a bounce",
        severity=_E,
        family="cross",
        example=_example(
            "# Accepted, then a DSN with Action: relayed; reported as a hard bounce.",
            *_ACCEPTED,
            '3 dsn {"to": "bounces+late=example.com@gateway.test", "dialect": "postfix", '
            '"recipients": [{"recipient": "late@example.com", "action": "relayed", '
            '"status": "2.0.0"}], "ok": true, "host": "mx1", "message": "MX1000003"}',
            '4 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "late@example.com", 1700000003, null]]}',
        ),
        explanation="The last thing the mail world said about the address before the callback "
        "was a success DSN (`Action: delivered`, `relayed` or `expanded`, RFC 3464): the "
        "message got through. It arrives at the bounce address like a failure DSN, and a "
        "processor that reads only the envelope, or the `Status` class without the `Action`, "
        "reports it as a bounce (contract, section 4.2: nothing in legacy, `delivered` in v2).",
    )
)
NOT_THE_ADDRESS_SENT_TO = register(
    Check(
        code="CT515",
        title="reported address is not the address CleverTap sent to",
        severity=_E,
        family="cross",
        example=_example(
            "# The message to user@example.com was forwarded; the DSN's Final-Recipient is",
            "# alias@other.test, and that is the address reported.",
            '0 sent {"message_id": "<1@brand.test>", "from": "news@brand.test", '
            '"to": ["user@example.com"], "subject": "Hi", "ok": true, "reply": "250 ok"}',
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-2", "recipient": "user@example.com", '
            '"sender": "bounces@brand.test", "stage": "later", "code": 250, "enhanced": "2.1.5", '
            '"reply": "250 2.1.5 Ok", "class": "hard", "mode": "invalid_address", "attempt": 1}',
            '0.6 smtp_message {"host": "mx1", "session": "mx1-2", "id": "MX1000004", '
            '"sender": "bounces@brand.test", "recipients": [{"address": "user@example.com"}]}',
            '3 dsn {"to": "bounces+user=example.com@gateway.test", "dialect": "postfix", '
            '"recipients": [{"recipient": "alias@other.test", "action": "failed", '
            '"status": "5.1.1"}], "ok": true, "host": "mx1", "message": "MX1000004"}',
            '4 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "alias@other.test", 1700000003, null]]}',
        ),
        explanation="CleverTap can only match an event to a user by the address it sent to. "
        "Two ways to get another one: the DSN's `Final-Recipient` after aliasing or "
        "forwarding at the next hop (the DSN reports on a message sent to someone else; the "
        "VERP envelope, or `Original-Recipient`, names the right one: contract, section 4.2), "
        "and an IDN domain written in the other form (`xn--bcher-kva.example` for "
        "`bücher.example`, or the reverse), compared after IDNA (UTS 46) mapping. The other "
        "cross-checks are not run on such an event: they would only repeat that the address "
        "is unknown.",
    )
)
OTHER_CASE = register(
    Check(
        code="CT516",
        title="reported address differs in the case of its local part",
        severity=_W,
        family="cross",
        example=_example(
            "# CleverTap sent to Ann.Lee@example.com; the callback says ann.lee@example.com.",
            '0 sent {"message_id": "<1@brand.test>", "from": "news@brand.test", '
            '"to": ["Ann.Lee@example.com"], "subject": "Hi", "ok": true, "reply": "250 ok"}',
            '0.5 smtp_reply {"host": "mx1", "session": "mx1-2", '
            '"recipient": "Ann.Lee@example.com", "sender": "bounces@brand.test", '
            '"stage": "rcpt", "code": 550, "enhanced": "5.1.1", "reply": "550 5.1.1 User unknown", '
            '"class": "hard", "mode": "invalid_address", "attempt": 1}',
            '2 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "ann.lee@example.com", 1700000001, null]]}',
        ),
        explanation="The reported address is the one CleverTap sent to except for the case of "
        "its local part (the domain's case never matters). Mail systems almost always treat "
        "local parts case-insensitively, and the harness matches them so everywhere, but "
        "RFC 5321 lets them differ and CleverTap's own rule is not public: echo the address "
        "exactly as it was sent. A warning, not an error.",
    )
)

SLOW_AS_BOUNCE = register(
    Check(
        code="CT517",
        title="bounce for a mail server that was slow, not down",
        severity=_E,
        family="cross",
        example=_example(
            "# slow.test waits 1 s before every reply; the integration's SMTP timeout is 0.8 s.",
            '0 sent {"message_id": "<1@brand.test>", "from": "news@brand.test", '
            '"to": ["user@slow.test"], "subject": "Hi", "ok": true, "reply": "250 ok"}',
            '0.1 smtp_open {"host": "slow.test", "session": "slow.test-2", '
            '"peer": "127.0.0.1:42422", "variant": "slow"}',
            '0.9 smtp_session {"host": "slow.test", "session": "slow.test-2", '
            '"peer": "127.0.0.1:42422", "variant": "slow", "end": "client_dropped", '
            '"started": 1700000000.1, "duration": 0.8}',
            '3 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["softbounce", "user@slow.test", 1700000002, null]]}',
        ),
        explanation="Every connection to the address's mail server went to a host playing "
        "`slow` (a working server that waits before every reply, 1 s by default) and nothing "
        "failed: the integration gave up before the server answered. Its SMTP timeout is "
        "shorter than the contract's range (section 4.4: a per-reply timeout of 2 s or more; "
        "RFC 5321 4.5.3.2 asks for minutes), so a working server is reported as a bounce.",
    )
)


# -- the integration's own doors (CT6xx) ---------------------------------------------------------

SUBMISSION_ACCEPTED = register(
    Check(
        code="CT601",
        title="submission accepted with wrong or missing credentials",
        severity=_E,
        family="integration",
        example=_example(
            "# The integration was given clevertap / secret (HARNESS_SUBMISSION_USER, _PASSWORD);",
            "# after the campaign the runner tried a wrong password, and AUTH succeeded.",
            '5 submission_probe {"probe": "wrong_password", "username": "clevertap", '
            '"auth_reply": "235 2.7.0 Authentication successful", "accepted": true, '
            '"stage": "auth", "reply": "235 2.7.0 Authentication successful", '
            '"steps": ["AUTH -> 235 2.7.0 Authentication successful"]}',
        ),
        explanation="After the campaign the runner submits again with bad credentials "
        "(`integration.submission_probes`: a wrong password, a user it was not given, no AUTH "
        "at all) and stops before DATA, so nothing is relayed. The integration must refuse "
        "each: `535` to AUTH, `530` to MAIL or RCPT without AUTH (contract, section 3.1). One "
        "that accepts them relays anybody's mail under the brand's name. The violation says "
        "which credentials were accepted and at which step.",
    )
)

_PROBED = {
    "wrong_password": "a submission with a wrong password for {user!r}",
    "wrong_user": "a submission as {user!r}, a user name it was not given",
    "no_auth": "a submission without AUTH",
}


def _probes(facts: Facts) -> list[Violation]:
    """CT601 for every submission probe the integration accepted."""
    found: list[Violation] = []
    for entry, probe in facts.probes:
        if not probe.accepted:
            continue
        what = _PROBED.get(probe.probe, probe.probe).format(user=probe.username)
        if probe.stage == "auth":
            how = f"AUTH answered {probe.reply}"
        else:
            how = f"{(probe.stage or 'the submission').upper()} answered {probe.reply}"
            if probe.auth_reply is not None:
                how += f" although AUTH was refused ({probe.auth_reply})"
        found.append(
            Violation(
                code=SUBMISSION_ACCEPTED.code,
                severity=SUBMISSION_ACCEPTED.severity,
                path=f"submission {probe.probe}",
                message=f"the integration's submission port accepted {what}: {how}",
                expected="535 to AUTH, and no recipient accepted"
                if probe.username is not None
                else "530 (authentication required) to MAIL or RCPT",
                seen="; ".join(probe.steps) or str(probe.reply),
                evidence=(entry.seq,),
                extra={"probe": probe.probe, "username": probe.username},
            )
        )
    return found


_SENT_LATE = (
    '0 sent {"message_id": "<1@brand.test>", "from": "news@brand.test", '
    '"to": ["late@example.com"], "subject": "Hi", "ok": true, "reply": "250 ok"}',
    '0.5 smtp_reply {"host": "mx1", "session": "mx1-1", "recipient": "late@example.com", '
    '"sender": "bounces@brand.test", "stage": "later", "code": 250, "enhanced": "2.1.5", '
    '"reply": "250 2.1.5 Ok", "class": "none", "mode": "accept", "attempt": 1}',
    '0.6 smtp_message {"host": "mx1", "session": "mx1-1", "id": "MX1000003", '
    '"sender": "bounces@brand.test", "recipients": [{"address": "late@example.com"}]}',
)
_COMPLAINT = (
    '3 dsn {"to": "bounces+late=example.com@gateway.test", "dialect": "", '
    '"recipients": [{"recipient": "late@example.com"}], "ok": true, "host": "mx1", '
    '"message": "MX1000003", "report": "complaint", "style": "abuse"}'
)

AUTO_REPLY_REPORTED = register(
    Check(
        code="CT520",
        title="auto-reply reported as a bounce or a complaint",
        severity=_E,
        family="cross",
        example=_example(
            "# Accepted, then an out-of-office reply came back; reported as a soft bounce.",
            *_SENT_LATE,
            '3 dsn {"to": "bounces+late=example.com@gateway.test", "dialect": "", '
            '"recipients": [{"recipient": "late@example.com"}], "ok": true, "host": "mx1", '
            '"message": "MX1000003", "report": "auto_reply", "style": "vacation"}',
            '4 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["softbounce", "late@example.com", 1700000003, null]]}',
        ),
        explanation="The last thing the mail world said about the address before the callback "
        "was an automatic reply (RFC 3834 `Auto-Submitted: auto-replied`: out of office, "
        "vacation): the message arrived and someone's mailbox answered it. It reaches the "
        "bounce address like a DSN, but it is neither a bounce nor a complaint, and no "
        "callback is due (contract, section 4.2). A processor that takes any mail at the "
        "bounce address for a bounce reports it.",
    )
)
COMPLAINT_NOT_REPORTED = register(
    Check(
        code="CT521",
        title="complaint never reported",
        severity=_E,
        family="cross",
        example=_example(
            "# A feedback-loop complaint reached the integration; no callback followed it.",
            *_SENT_LATE,
            _COMPLAINT,
            '9 note {"source": "runner", "what": "settled"}',
        ),
        explanation="A complaint (RFC 5965 ARF feedback report: the recipient marked the "
        "message as spam) reached the integration's intake, and by the end of the run, "
        "`after_dsn` (2 s by default) or more later, no accepted callback reported that address "
        "as `spam` or unsubscribed. CleverTap unsubscribes users who complain (v2 `spam` "
        "maps to Channel Unsubscribed); mailing them again hurts the sender's reputation with "
        "the very provider that sent the report. An address already reported unsubscribed "
        "(after a click) needs no second report; one reported as a bounce instead is CT522.",
    )
)
COMPLAINT_AS_BOUNCE = register(
    Check(
        code="CT522",
        title="complaint reported as a bounce",
        severity=_E,
        family="cross",
        example=_example(
            "# A complaint about late@example.com, reported as a hard bounce.",
            *_SENT_LATE,
            _COMPLAINT,
            '4 callback {"endpoint": "bounce", "path": "/callbacks/bounce", "status": 200, '
            '"events": [["hardbounce", "late@example.com", 1700000003, null]]}',
        ),
        explanation="The last thing the mail world said about the address before the callback "
        "was a complaint (RFC 5965 `multipart/report; report-type=feedback-report`): the "
        "message was delivered and the recipient marked it as spam. That is an unsubscribe "
        "(v2 `spam`, legacy `unsubscribe`), not a bounce: a processor that reads any "
        "`multipart/report` as a DSN reports the wrong event, and the user stays subscribed.",
    )
)
COMPLAINT_WRONG_EVENT = register(
    Check(
        code="CT523",
        title="complaint reported with another event than the scenario's mapping",
        severity=_E,
        family="cross",
        example=_example(
            "# v2: the complaint must be a spam event (the default mapping); it came as",
            "# unsubscribed.",
            *_SENT_LATE,
            _COMPLAINT,
            '4 callback {"endpoint": "v2", "path": "/callbacks/v2", "status": 200, '
            '"events": [["unsubscribed", "late@example.com", null, "m"]]}',
        ),
        explanation="A complaint was reported as an unsubscribe-like event, but not the one "
        "the scenario maps complaints to (`clevertap.complaint_as`; default: v2 `spam`, legacy "
        "`unsubscribe`, since legacy has no spam event). With v2, `spam` and `unsubscribed` "
        "both unsubscribe the user, but CleverTap reports them apart; the scenario says which "
        "the integration must send. Not raised when a click by that recipient explains an "
        "unsubscribe.",
    )
)


# -- running them --------------------------------------------------------------------------------


def cross_check(facts: Facts, *, config: CrossCheckConfig | None = None) -> list[Violation]:
    """Every CT5xx violation of *facts*, in journal order (of the entry each one is about)."""
    config = config or CrossCheckConfig()
    found: list[Violation] = []
    reported: dict[tuple[str, str], ReportedEvent] = {}
    unsubscribed: set[str] = set()
    for event in facts.events:
        if not event.accepted or not event.email:
            continue
        identity = _identity(facts, event)
        if identity is not None:
            found.append(identity)
            if identity.severity is Severity.ERROR:
                continue  # an address CleverTap never sent to: every other check would say so
        what = event.what
        if what in ("unsubscribe", "spam"):
            unsubscribed.add(_canon(event.email))
        if what in BOUNCES:
            bounce = _bounce(facts, event, what)
            if any(v.code == COMPLAINT_AS_BOUNCE.code for v in bounce):
                unsubscribed.add(_canon(event.email))  # CT522 says it; CT521 would repeat it
            found.extend(bounce)
            found.extend(_twice(facts, event, (event.event, event.address), reported, TWICE))
        elif what == "unsubscribe":
            # Per address, whatever the format's event name (contract, section 3.3).
            key = ("unsubscribe", event.address)
            found.extend(_twice(facts, event, key, reported, UNSUBSCRIBED_TWICE))
            if facts.click_before(event.email, event.at) is not None:
                pass
            elif facts.complaint_before(event.email, event.at) is not None:
                found.extend(_complaint_event(facts, event))
            else:
                found.append(_no_click(facts, event))
        elif what == "spam":
            if facts.complaint_before(event.email, event.at) is not None:
                found.extend(_complaint_event(facts, event))
            else:
                found.extend(_after_auto_reply(facts, event))
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
    bounced = {_canon(e.email) for (name, _), e in reported.items() if name != "unsubscribe"}
    found.extend(_never_retried(facts, reported=bounced))
    found.extend(_complaints_unreported(facts, unsubscribed))
    found.extend(_resent_too_soon(facts, config))
    found.extend(_probes(facts))
    # Stable: the checks of one event keep their order.
    found.sort(key=lambda v: v.evidence[0] if v.evidence else 0)
    return found


def _twice(
    facts: Facts,
    event: ReportedEvent,
    key: tuple[str, str],
    reported: dict[tuple[str, str], ReportedEvent],
    check: Check,
) -> list[Violation]:
    first = reported.get(key)
    if first is None:
        reported[key] = event
        return []
    if first.seq == event.seq:  # twice in one payload is CT401
        return []
    what = "bounce" if check is TWICE else "unsubscribe"
    return [
        _violation(
            facts,
            check,
            event,
            f"{event.event} for {event.email} was already reported in callback {first.seq}",
            expected=f"one report per {what}",
            seen=f"reports in callbacks {first.seq} and {event.seq}",
            evidence=(first.seq, event.seq),
        )
    ]


def _expected_for_complaint(facts: Facts, event: ReportedEvent) -> str:
    if facts.complaint_event is not None:
        return facts.complaint_event
    return complaint_event("v2" if event.endpoint == "v2" else "legacy")


def _complaint_event(facts: Facts, event: ReportedEvent) -> list[Violation]:
    """CT523 when an event caused by a complaint is not the scenario's mapping of one."""
    expected = _expected_for_complaint(facts, event)
    if event.event == expected:
        return []
    complaint = facts.complaint_before(event.email, event.at)
    if complaint is None:  # pragma: no cover - callers check
        return []
    return [
        _violation(
            facts,
            COMPLAINT_WRONG_EVENT,
            event,
            f"{event.event} for {event.email} after a complaint, but the scenario maps "
            f"complaints to {expected}: {complaint.detail}",
            expected=expected,
            seen=event.event,
            evidence=(event.seq, complaint.seq),
        )
    ]


def _after_auto_reply(facts: Facts, event: ReportedEvent) -> list[Violation]:
    """CT520 when the last thing before *event* was an auto-reply."""
    last = facts.outcome_before(event.email, event.at)
    if last is None or last.kind != MailReport.AUTO_REPLY:
        return []
    return [
        _violation(
            facts,
            AUTO_REPLY_REPORTED,
            event,
            f"{event.event} for {event.email}, but the last mail about it before the callback "
            f"was an automatic reply: {last.detail}",
            expected="no callback (an auto-reply is not a bounce)",
            seen=f"{event.event}; last before it: {last.detail}",
            evidence=(event.seq, last.seq),
        )
    ]


def _complaints_unreported(facts: Facts, unsubscribed: set[str]) -> list[Violation]:
    """CT521 for complaints that reached the integration and no callback ever followed."""
    finished = facts.finished
    if finished is None:
        return []
    found: list[Violation] = []
    for key, complaints in facts.complaints.items():
        first = complaints[0]
        if key in unsubscribed or first.start + facts.report_window > finished:
            continue
        name = facts.name(key)
        wanted = facts.complaint_event or "spam (v2) or unsubscribe (legacy)"
        found.append(
            Violation(
                code=COMPLAINT_NOT_REPORTED.code,
                severity=COMPLAINT_NOT_REPORTED.severity,
                path=f"recipient {name}",
                message=f"{name} complained (a feedback report reached the integration) and no "
                f"callback reported it in the {finished - first.start:.1f} s that followed: "
                f"{first.detail}",
                expected=f"a {wanted} callback for {name}",
                seen="no spam or unsubscribe callback for the address",
                evidence=tuple(o.seq for o in complaints),
                extra={"recipient": name},
            )
        )
    return found


def _no_click(facts: Facts, event: ReportedEvent) -> Violation:
    clicks = facts.clicks.get(event.address, ())
    scans = [e for e, c in clicks if c.scan and c.reached and e.at <= event.at]
    others = [e for e, c in clicks if not c.scan]
    if scans:
        # The classic bug: the page unsubscribes on GET, and a scanner fetched it.
        listed = ", ".join(str(e.seq) for e in scans)
        message = (
            f"{event.event} for {event.email} after only a link scanner's GET (seq {listed}): "
            "the integration unsubscribed on a GET, which scanners and previewers make"
        )
        seen = f"a link scanner's GET of the message's links (seq {listed}) and no click"
        if others:
            later = ", ".join(str(e.seq) for e in others)
            seen += f"; clicks only after the callback (seq {later})"
    else:
        message = (
            f"{event.event} for {event.email}, but no unsubscribe action by that recipient "
            "reached the integration before it"
        )
        seen = (
            f"clicks only after the callback (seq {', '.join(str(e.seq) for e in others)})"
            if others
            else "no click"
        )
    return _violation(
        facts,
        NO_CLICK,
        event,
        message,
        expected="a click (one-click POST, link or mailto) before the callback",
        seen=seen,
        evidence=(event.seq, *(e.seq for e, _ in clicks)),
    )


def _identity(facts: Facts, event: ReportedEvent) -> Violation | None:
    """CT515 when *event* names another address than the one CleverTap sent to (a DSN's
    Final-Recipient after aliasing, the IDN domain in its other form); CT516 when only the
    case of the local part differs."""
    spelled = facts.spelling(event.email)
    if spelled is None:
        alias = facts.aliases.get(_canon(event.email))
        if alias is None:
            return None  # an address nobody knows: CT501, CT507 or CT509 say so
        original, dsn, message = alias
        return _violation(
            facts,
            NOT_THE_ADDRESS_SENT_TO,
            event,
            f"{event.event} for {event.email}, the Final-Recipient of the DSN (seq {dsn}) of a "
            f"message sent to {original}",
            expected=original,
            seen=event.email,
            evidence=(event.seq, dsn, message),
        )
    sent, seq = spelled
    if address_key(sent) != event.address:
        return _violation(
            facts,
            NOT_THE_ADDRESS_SENT_TO,
            event,
            f"{event.event} for {event.email}, but CleverTap sent to {sent}: the same domain in "
            "its other IDN form",
            expected=sent,
            seen=event.email,
            evidence=(event.seq, seq),
        )
    if event.email.rpartition("@")[0] == sent.rpartition("@")[0]:
        return None
    return _violation(
        facts,
        OTHER_CASE,
        event,
        f"{event.event} for {event.email}, but CleverTap sent to {sent}: the local part is in "
        "another case",
        expected=sent,
        seen=event.email,
        evidence=(event.seq, seq),
    )


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
    slow = next((o for o in history if o.kind == _SLOW), None)
    if slow is not None and not any(o.failed or o.kind in _DELIVERED for o in history):
        return [
            _violation(
                facts,
                SLOW_AS_BOUNCE,
                event,
                f"{event.event} for {event.email}, but its mail server never failed: it answered "
                "late, and the integration gave up before it answered",
                expected="a delivery: a per-reply SMTP timeout longer than the server's delay "
                "(the contract asks for 2 s or more)",
                seen=slow.detail,
                evidence=(event.seq, slow.seq),
            )
        ]
    last = facts.outcome_before(event.email, event.at)
    if last is not None and last.kind == MailReport.AUTO_REPLY:
        return _after_auto_reply(facts, event)
    if last is not None and last.kind == MailReport.COMPLAINT:
        return [
            _violation(
                facts,
                COMPLAINT_AS_BOUNCE,
                event,
                f"{event.event} for {event.email}, but the last mail about it before the "
                f"callback was a complaint: {last.detail}",
                expected=_expected_for_complaint(facts, event),
                seen=event.event,
                evidence=(event.seq, last.seq),
            )
        ]
    if last is not None and last.kind in ("dsn_delayed", "dsn_success"):
        check = DELAYED_AS_BOUNCE if last.kind == "dsn_delayed" else SUCCESS_AS_BOUNCE
        said = "is delayed, not failed" if last.kind == "dsn_delayed" else "got through"
        return [
            _violation(
                facts,
                check,
                event,
                f"{event.event} for {event.email}, but the last DSN before it says the message "
                f"{said}: {last.detail}",
                expected="no bounce" if last.kind == "dsn_success" else "no bounce yet",
                seen=f"{event.event}; last before it: {last.detail}",
                evidence=(event.seq, last.seq),
            )
        ]
    final = facts.final(event.email)
    if final is not None and final.kind in _DELIVERED:
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
    found = _gave_up(facts, event)
    failure = facts.failure_before(event.email, event.at)
    if failure is None or failure.bounce_class not in BOUNCES or failure.bounce_class == what:
        return found
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
        ),
        *found,
    ]


def _temporary_only(facts: Facts, address: str, at: float) -> list[Observation] | None:
    """The failures of *address* up to *at* when there are some and every one is temporary
    and nothing else (an acceptance, a DSN) happened; else None."""
    if _canon(address) not in facts.temporary and facts._down_for(address) is None:
        return None  # the common case, without building the history
    seen = [o for o in facts.history(address) if o.start <= at and o.kind != "attempt"]
    if not seen or not all(o.failed and o.temporary for o in seen):
        return None
    return seen


def _gave_up(facts: Facts, event: ReportedEvent) -> list[Violation]:
    """CT510 for a bounce reported after a single attempt that failed temporarily."""
    failures = _temporary_only(facts, event.email, event.at)
    if failures is None or facts.attempts(event.email, event.at) != 1:
        return []
    return [
        _violation(
            facts,
            NEVER_RETRIED,
            event,
            f"{event.event} for {event.email} after a single attempt that failed temporarily: "
            f"{failures[-1].detail}",
            expected="a retry on the integration's schedule before any bounce",
            seen=f"1 attempt, then {event.event}",
            evidence=(event.seq, *(o.seq for o in failures)),
        )
    ]


def _never_retried(facts: Facts, *, reported: set[str]) -> list[Violation]:
    """CT510 for addresses nobody reported, tried once, failed temporarily, although the run
    went on for the whole retry budget after that attempt."""
    budget, finished = facts.retry_budget, facts.finished
    if budget is None or finished is None:
        return []
    found: list[Violation] = []
    # Only a temporary failure or a host down can make a candidate.
    candidates = set(facts.temporary)
    if facts.down_hosts or facts.down_domains:
        candidates |= set(facts.observations) | {_canon(a) for a in facts.sent}
    for address in sorted(candidates):
        if address in reported:
            continue  # _gave_up judged it against its report
        failures = _temporary_only(facts, address, math.inf)
        if failures is None or failures[0].start + budget > finished:
            continue
        if facts.attempts(address) != 1:
            continue
        name = facts.name(address)
        first = failures[0]
        found.append(
            Violation(
                code=NEVER_RETRIED.code,
                severity=NEVER_RETRIED.severity,
                path=f"recipient {name}",
                message=f"{name} failed temporarily on its only attempt and was not tried again "
                f"in the {budget:g} s of the retry budget (HARNESS_RETRY_BUDGET): {first.detail}",
                expected="a retry on the integration's schedule, within the retry budget",
                seen=f"1 attempt in the {finished - first.start:.0f} s after it",
                evidence=tuple(dict.fromkeys(o.seq for o in failures)),
                extra={"recipient": name, "retry_budget": budget},
            )
        )
    return found


def _failed_request(record: Callback) -> bool:
    """The integration must resend it: 429, 5xx, or a connection a fault dropped."""
    if record.status is None:
        return record.fault is not None and record.fault.action in ("close", "reset")
    return record.status == 429 or record.status >= 500


def _resent_too_soon(facts: Facts, config: CrossCheckConfig) -> list[Violation]:
    """CT511 over every failed request and its resend."""
    found: list[Violation] = []
    calls = sorted(facts.callbacks.values(), key=lambda c: c[0].seq)
    # Where each event and each body was sent, so that finding a resend is a lookup, not a scan
    # of every later request (a run with a fault rate has many failed requests).
    positions: dict[tuple[object, ...], list[int]] = {}
    for i, (_, record) in enumerate(calls):
        for key in _resend_keys(record):
            places = positions.setdefault(key, [])
            if not places or places[-1] != i:
                places.append(i)
    for i, (entry, record) in enumerate(calls):
        if not _failed_request(record):
            continue
        later_ones = [
            places[at]
            for places in (positions[key] for key in _resend_keys(record))
            if (at := bisect_right(places, i)) < len(places)
        ]
        if not later_ones:
            continue
        later, _ = calls[min(later_ones)]
        answered = entry.at + _fault_delay(record)
        gap = later.at - answered
        retry_after = record.fault.retry_after if record.fault is not None else None
        if record.status is not None:
            how = str(record.status)
        else:
            how = f"dropped ({record.fault.spec if record.fault is not None else 'no answer'})"
        if retry_after is not None:
            need = min(float(retry_after), config.retry_after_cap)
            given = f"{how} with Retry-After: {retry_after}"
            expected = f"a resend at least {need:g} s after the answer"
        else:
            need = config.callback_backoff
            given = how
            expected = f"a backoff of at least {need:g} s"
        if gap + config.timing_slack >= need:
            continue
        found.append(
            Violation(
                code=RESENT_TOO_SOON.code,
                severity=RESENT_TOO_SOON.severity,
                path="$",
                message=f"callback {entry.seq} got {given} and was resent {gap:.3f} s later "
                f"(callback {later.seq})",
                expected=expected,
                seen=f"{gap:.3f} s",
                evidence=(entry.seq, later.seq),
                extra={"callback": later.seq, "gap": round(gap, 3), "retry_after": retry_after},
            )
        )
    return found


def _resend_keys(record: Callback) -> set[tuple[object, ...]]:
    """What makes a later request the resend of *record*: the same body to the same endpoint,
    or one of its events (an integration may batch a failed event with new ones)."""
    keys: set[tuple[object, ...]] = {(record.endpoint, "body", record.body, record.body_base64)}
    keys.update((record.endpoint, e.event, address_key(e.email)) for e in record.events)
    return keys


def _fault_delay(record: Callback) -> float:
    """How long the fake CleverTap waited before it answered (the fault's ``delay``)."""
    if record.fault is None:
        return 0.0
    try:
        return parse_fault(record.fault.spec).delay or 0.0
    except ConfigError:
        return 0.0  # a spec the parser no longer reads: count from the arrival (lenient)


def _ts(facts: Facts, event: ReportedEvent, config: CrossCheckConfig) -> list[Violation]:
    if event.ts is None or abs(event.ts) >= _TS_UNIT_LIMIT:
        return []
    if event.what not in BOUNCES and event.what not in ("unsubscribe", "spam"):
        return []
    # The window starts at the event that justifies the report (see Facts.real_window).
    low: float
    evidence: int | None = None
    what = "the first attempt at the address"
    if event.what in ("unsubscribe", "spam"):
        why = facts.unsubscribed_by(event.email, event.at)
        if why is None:
            return []  # CT507 says what is wrong; there is no real event to time
        low, evidence = why
        what = "the click" if facts.click_before(event.email, event.at) else "the complaint"
    elif (failure := facts.failure_before(event.email, event.at)) is not None:
        low, evidence = failure.start, failure.seq
        what = _JUSTIFIED_BY.get(failure.kind, "the failure it reports")
    elif history := facts.history(event.email):
        low, evidence = history[0].start, history[-1].seq
    elif facts.started is not None:
        low = facts.started
    else:
        return []  # CT501 says what is wrong
    earliest = math.floor(low - config.ts_skew)
    latest = event.at + config.ts_skew
    if earliest <= event.ts <= latest:
        return []
    if event.ts < earliest:
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


_JUSTIFIED_BY = {
    "dsn": "the DSN arrived",
    "host_down": "its mail server was seen down",
}


def _meta(facts: Facts, event: ReportedEvent) -> list[Violation]:
    if event.endpoint != "v2" or not event.meta:
        return []
    carriers = facts.metas.get(event.meta)
    if not carriers:
        own = [m for m, _ in _metas_of(facts, _canon(event.email))]
        return [
            _violation(
                facts,
                META_UNKNOWN,
                event,
                f"meta of {event.event} for {event.email} matches no X-CleverTap_META of a sent "
                "message",
                expected=repr(own[0]) if own else "the X-CleverTap_META of a sent message",
                seen=repr(event.meta),
                evidence=(event.seq, *(s for _, s in _metas_of(facts, _canon(event.email)))),
            )
        ]
    recipients = set().union(*(r for _, r in carriers))
    if _canon(event.email) in recipients or not recipients:
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
