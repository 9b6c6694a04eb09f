"""Typed journal records: one type per kind of entry, built by its producer, read by everyone.

Every observable fact the harness journals is one of the records below. The producer (the fake
CleverTap, an MX host, the runner) builds the record when the thing happens; every reader
(cross-checks, ``expect``, the control API, reports, the pytest plugin, tests) reads the same
type. The JSON form (:func:`record_json`) is what the control API, the JSON report and
``docs/journal.md`` show; a test keeps that page in step with these types.

Records are msgspec ``Struct`` s: frozen, slotted, untracked by the cyclic garbage collector
(``gc=False``: they hold only strings, numbers and other records, so they cannot form cycles) and
stored as compact MessagePack arrays (``array_like``). Fields added later go at the end with a
default, so that files written earlier still decode.

The rules that more than one reader needs live here, next to the data they read, and nowhere
else: :meth:`Callback.accepted`, :meth:`CallbackEvent.matches` (this event for this address),
:meth:`SmtpReply.failed`, :func:`accepted_recipients`.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Any, ClassVar, TypeAlias

import msgspec

from harness.checks import Severity, Violation
from harness.vocab import CLASS_OF_EVENT, SCAN, MailReport, address_key

__all__ = [
    "RECORD_TYPES",
    "Callback",
    "CallbackEvent",
    "Click",
    "ClickStep",
    "DroppedMessage",
    "Dsn",
    "DsnRecipient",
    "DsnSkipped",
    "FaultHit",
    "FaultsChanged",
    "HostChange",
    "Kind",
    "Note",
    "Recipient",
    "Record",
    "ScheduledBounce",
    "Sent",
    "SmtpClose",
    "SmtpMessage",
    "SmtpOpen",
    "SmtpReply",
    "SubmissionProbe",
    "TranscriptLine",
    "ViolationFound",
    "accepted_recipients",
    "addresses_of",
    "record_from_json",
    "record_json",
    "scrub",
]


class Kind(StrEnum):
    """What an entry records; each kind has exactly one record type (:data:`RECORD_TYPES`)."""

    CALLBACK = "callback"
    """An HTTP request to the fake CleverTap, valid or not, with its violations and the answer."""
    SMTP_OPEN = "smtp_open"
    """A connection to a fake MX or relay was accepted (journaled at once)."""
    SMTP_REPLY = "smtp_reply"
    """A reply that decided a recipient: RCPT, DATA or end of DATA (journaled as it is given,
    before the client reads it)."""
    SMTP_MESSAGE = "smtp_message"
    """A message accepted with 250 after DATA: the acceptance of each of its recipients."""
    SMTP_SESSION = "smtp_session"
    """A connection ended: its transcript (bounded), how it ended."""
    DSN = "dsn"
    """A delivery status notification the world sent (or failed to send) to the bounce intake."""
    DSN_SKIPPED = "dsn_skipped"
    """A DSN that was due but not sent (null sender, NOTIFY=NEVER, no intake, host stopped)."""
    SENT = "sent"
    """A campaign message the runner submitted to the integration, as CleverTap would."""
    CLICK = "click"
    """An unsubscribe action the runner performed as the recipient."""
    VIOLATION = "violation"
    """A violation found after the fact (cross-checks that join the mail world and callbacks)."""
    HOST = "host"
    """A fake MX host taken down or brought back up at run time."""
    FAULTS = "faults"
    """The fake CleverTap's fault rules were replaced."""
    NOTE = "note"
    """Anything else worth keeping in order."""
    SUBMISSION_PROBE = "submission_probe"
    """A submission the runner tried with bad credentials (a wrong password, no AUTH)."""


class Record(
    msgspec.Struct, frozen=True, kw_only=True, gc=False, array_like=True, omit_defaults=True
):
    """The base of every record type."""

    KIND: ClassVar[Kind]


class Nested(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """The base of the structs records are made of (stored with their field names, so that
    their JSON form converts straight back)."""


# -- the fake CleverTap ----------------------------------------------------------------------------


class CallbackEvent(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One event of a callback payload, normalised across formats, valid or not.

    JSON: ``[event, email, ts, meta]``. ``event`` is the legacy event name or the v2 ``type``;
    ``event`` and ``email`` are ``""`` where the payload gave no string; ``ts`` is None where the
    payload gave none (v2) or no integer; ``meta`` is the v2 ``meta``.
    """

    event: str
    email: str
    ts: int | None = None
    meta: str | None = None

    JSON_ARRAY: ClassVar[bool] = True

    @property
    def what(self) -> str | None:
        """``hard``, ``soft``, ``unsubscribe``, ``delivered``, ``spam``; None when unknown."""
        return CLASS_OF_EVENT.get(self.event)

    def matches(self, event: str | None, address: str | None) -> bool:
        """This event for this address: *event* exactly, *address* by :func:`address_key`.

        None matches anything. The one matcher used by ``expect``, the control API filters,
        the respx mock and the cross-checks.
        """
        if event is not None and self.event != event:
            return False
        return address is None or address_key(self.email) == address_key(address)


class FaultHit(Nested, frozen=True):
    """The fault rule that hit a request."""

    rule: int
    """Its index in the fault plan."""
    action: str
    """``status``, ``delay``, ``close`` or ``reset``."""
    spec: str
    """The rule as written: ``status=503,first=2,retry_after=5``."""
    retry_after: int | None = None
    """The ``Retry-After`` header sent with it, in seconds."""


class Callback(Record, frozen=True):
    """One HTTP request to a callback endpoint (or a wrong path), whatever came of it."""

    KIND = Kind.CALLBACK
    endpoint: str | None
    """``bounce``, ``unsubscribe`` or ``v2``; None for a request to a path that is none of them."""
    path: str
    peer: str | None = None
    content_type: str | None = None
    size: int = 0
    """The body's real length (also when only the first ``max_body`` bytes were kept)."""
    body: str = ""
    body_base64: bool = False
    """True when the body was not UTF-8 and ``body`` holds it base64-encoded."""
    truncated: bool = False
    method: str = "POST"
    disconnected: bool = False
    """The client went away before its body was read."""
    format: str | None = None
    """``legacy`` or ``v2`` as detected; None when the body is not a callback payload."""
    events: tuple[CallbackEvent, ...] = ()
    violations: tuple[Violation, ...] = ()
    status: int | None = None
    """The status answered; None when no answer was sent (a fault dropped it, client gone)."""
    fault: FaultHit | None = None
    error: str | None = None
    """Why the harness could not check the payload (a harness bug; answered 500)."""

    @property
    def accepted(self) -> bool:
        """Answered 2xx: CleverTap would have acted on it. The one "accepted" rule."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def codes(self) -> tuple[str, ...]:
        """The codes of the violations found in it, each once, in order."""
        return tuple(dict.fromkeys(v.code for v in self.violations))

    @property
    def ok(self) -> bool:
        """No violation of error severity."""
        violations = self.violations
        return not violations or not any(v.severity is Severity.ERROR for v in violations)

    @property
    def remembered(self) -> bool:
        """Whether its events count as "already reported" for later duplicates (CT402).

        A request that was not processed as far as the integration can tell (a fault other
        than a delay, a refused method, an oversized or unread body) must be resent, and the
        resend is not a duplicate; neither is the corrected resend of a payload with errors.
        """
        if self.status is None or self.method != "POST" or self.error is not None:
            return False
        if self.fault is not None and self.fault.action != "delay":
            return False
        return self.status != 413 and self.ok

    def matching(self, event: str | None, address: str | None) -> Iterator[CallbackEvent]:
        return (e for e in self.events if e.matches(event, address))


# -- the fake mail world ---------------------------------------------------------------------------


class SmtpOpen(Record, frozen=True):
    """A connection accepted by a fake MX host or relay."""

    KIND = Kind.SMTP_OPEN
    host: str
    session: str
    """Unique in the journal for ever: ``<host>-<n>``."""
    peer: str
    port: int | None = None
    variant: str | None = None
    """The server-down variant the host played for this connection, if any."""
    tls: str | None = None
    """``implicit`` when TLS started with the connection."""


class ScheduledBounce(Nested, frozen=True):
    """The report an accepted recipient will get later: a DSN (``accept_then_bounce``,
    ``accept_then_report``), an auto-reply or a complaint."""

    after: float
    status: str = ""
    """The DSN's ``Status``; empty for an auto-reply or a complaint."""
    diagnostic: str | None = None
    dialect: str = ""
    """The DSN dialect; empty for an auto-reply or a complaint."""
    action: str = ""
    """The DSN's ``Action``; empty for an auto-reply or a complaint."""
    report: MailReport = MailReport.DSN
    """``dsn``, ``auto_reply`` (RFC 3834) or ``complaint`` (RFC 5965)."""
    final_recipient: str | None = None
    """The DSN's ``Final-Recipient`` when it is not the address sent to (aliasing)."""
    style: str | None = None
    """The auto-reply's style or the complaint's ``Feedback-Type``."""


class SmtpReply(Record, frozen=True):
    """A reply that decided a recipient, journaled when it is given.

    RCPT replies (every one: the rules', the host's own such as ``503 5.5.1`` or ``530 5.7.0``),
    DATA replies and end-of-DATA rejections (size, line length, the rules'). An end-of-DATA
    reply covers every recipient of the transaction: one record per recipient, the same reply.
    Acceptance after the final dot is the :class:`SmtpMessage` record, not a reply record.
    """

    KIND = Kind.SMTP_REPLY
    host: str
    session: str
    recipient: str
    sender: str
    stage: str
    """``rcpt``, ``data``, ``end_of_data``; ``later`` for a recipient accepted at RCPT whose
    rules act later (a DSN, or a DATA/end-of-DATA failure: a second record follows then)."""
    code: int
    enhanced: str | None
    reply: str
    """The reply as sent (the last line of a multi-line reply)."""
    mode: str | None = None
    """The catalog mode that decided it; None for the host's own protocol replies."""
    rule: str | None = None
    bounce_class: str | None = msgspec.field(default=None, name="class")
    """``soft``, ``hard`` or ``none`` as the mail world decided (scenario overrides applied);
    None for protocol replies that decide nothing about the address."""
    attempt: int | None = None
    cause: str | None = None
    """The recipient whose rule gave a DATA or end-of-DATA reply shared by all recipients."""
    bounce: ScheduledBounce | None = None
    transaction: int | None = None
    """The transaction in the session (1 from its first accepted MAIL on); None outside one
    (a RCPT before MAIL). A client that reuses its connection makes several."""

    @property
    def failed(self) -> bool:
        return self.code >= 400


class Recipient(Nested, frozen=True):
    address: str
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None


class SmtpMessage(Record, frozen=True):
    """A message accepted (250 after the final dot) by a fake MX or relay."""

    KIND = Kind.SMTP_MESSAGE
    host: str
    session: str
    id: str
    """The queue id given in the 250 reply; unique in the journal for ever."""
    peer: str | None = None
    sender: str = ""
    recipients: tuple[Recipient, ...] = ()
    ret: str | None = None
    envid: str | None = None
    body_type: str = "7BIT"
    smtputf8: bool = False
    size: int = 0
    declared_size: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    subject: str | None = None
    message_id: str | None = None
    x_clevertap_meta: str | None = None
    list_unsubscribe: str | None = None
    list_unsubscribe_post: str | None = None
    body: str = ""
    body_truncated: bool = False
    tls: str | None = None
    auth: str | None = None
    transaction: int | None = None
    """The transaction in the session that carried it (as in :class:`SmtpReply`)."""

    def has_recipient(self, address: str) -> bool:
        key = address_key(address)
        return any(address_key(r.address) == key for r in self.recipients)

    def eml(self) -> bytes:
        """The message as an ``.eml`` file, from the headers and body the record kept (a body
        the host cut short stays cut: ``body_truncated`` says so). The dashboard's and the
        control API's downloads."""
        text = "\r\n".join(f"{name}: {value}" for name, value in self.headers)
        body = self.body.replace("\r\n", "\n").replace("\n", "\r\n")
        return (text + "\r\n\r\n" + body).encode("utf-8", "surrogateescape")


class TranscriptLine(Nested, frozen=True):
    stage: str
    reply: str


class DroppedMessage(Nested, frozen=True):
    sender: str
    recipients: tuple[str, ...]
    after_dot: bool
    size: int | None = None
    transaction: int | None = None
    """The transaction in the session (as in :class:`SmtpReply`)."""


class SmtpClose(Record, frozen=True):
    """A connection ended: what was said (bounded) and how it ended."""

    KIND = Kind.SMTP_SESSION
    host: str
    session: str
    peer: str
    port: int | None = None
    variant: str | None = None
    ehlo: str | None = None
    tls: str | None = None
    auth: str | None = None
    """The authenticated user name (never a password)."""
    commands: tuple[str, ...] = ()
    """The commands, the first and last ones when there were more than the host keeps."""
    replies: tuple[TranscriptLine, ...] = ()
    commands_dropped: int = 0
    """How many commands were left out of ``commands`` (the middle of a long session)."""
    replies_dropped: int = 0
    messages: tuple[str, ...] = ()
    """Queue ids of the messages accepted in the session."""
    dropped_message: DroppedMessage | None = None
    """The transaction the server hung up on (``drop_mid_data``, ``drop_after_dot``)."""
    end: str = "client_dropped"
    """``quit``, ``client_dropped``, ``server_dropped``, ``timeout`` or ``server_stopped``."""
    started: float = 0.0
    duration: float = 0.0


class DsnRecipient(Nested, frozen=True):
    recipient: str
    """The DSN's ``Final-Recipient``; who auto-replied or complained for the other reports."""
    action: str = ""
    """The DSN's ``Action``; empty for an auto-reply or a complaint."""
    status: str = ""
    original: str | None = None
    """The DSN's ``Original-Recipient`` when it names another address than ``recipient``
    (aliasing: then it is the address sent to)."""


class Dsn(Record, frozen=True):
    """A report the mail world sent to the bounce intake, delivered or not: a DSN, or an
    auto-reply or complaint (``report``)."""

    KIND = Kind.DSN
    to: str
    sender: str = msgspec.field(default="", name="from")
    intake: str = ""
    transport: str = "smtp"
    dialect: str = "generic"
    recipients: tuple[DsnRecipient, ...] = ()
    message_id: str | None = None
    size: int = 0
    ok: bool = False
    reply: str | None = None
    error: str | None = None
    maildir_key: str | None = None
    host: str | None = None
    """The fake MX host that bounced the message."""
    message: str | None = None
    """The queue id of the message it reports on."""
    report: MailReport = MailReport.DSN
    """What was sent: a ``dsn``, an ``auto_reply`` (RFC 3834: out of office, no callback is
    due) or a ``complaint`` (RFC 5965 ARF: the recipient marked the message as spam)."""
    style: str | None = None
    """The auto-reply's style (``vacation``, ``exchange``) or the complaint's ``Feedback-Type``."""
    started: float | None = None
    """When its delivery began (epoch seconds). The entry is journaled once delivery ended, and
    the integration may act on the report before that: its consequences count from here."""


class DsnSkipped(Record, frozen=True):
    """A DSN that was due and was not sent, and why."""

    KIND = Kind.DSN_SKIPPED
    host: str
    message: str
    recipients: tuple[str, ...]
    sender: str
    reason: str


class Sent(Record, frozen=True):
    """A campaign message submitted to the integration by the runner."""

    KIND = Kind.SENT
    message_id: str
    sender: str = msgspec.field(name="from")
    to: tuple[str, ...]
    meta: str | None = None
    subject: str | None = None
    n: int = 0
    ok: bool = False
    reply: str | None = None
    error: str | None = None


class ClickStep(Nested, frozen=True):
    method: str
    url: str
    status: int | None = None


class Click(Record, frozen=True):
    """An unsubscribe action performed as the recipient."""

    KIND = Kind.CLICK
    recipient: str
    via: str
    url: str | None = None
    status: int | None = None
    ok: bool = False
    error: str | None = None
    message_seq: int | None = None
    steps: tuple[ClickStep, ...] = ()
    refused: str | None = None
    """Why a URL was not contacted: it lies outside the clicker's world (ClickScope)."""

    @property
    def reached(self) -> bool:
        """The action reached the integration (whatever it answered)."""
        return self.ok or self.status is not None

    @property
    def scan(self) -> bool:
        """A link scanner's fetches (``via: scan``), not an unsubscribe action."""
        return self.via == SCAN

    @property
    def acted(self) -> bool:
        """An unsubscribe action (not a scan) reached the integration: what justifies an
        unsubscribe callback."""
        return self.reached and not self.scan


class ViolationFound(Record, frozen=True):
    """A violation found by the cross-checks after the fact."""

    KIND = Kind.VIOLATION
    violation: Violation
    source: str = "judge"
    scenario: str | None = None


class HostChange(Record, frozen=True):
    """A fake MX host taken down (playing a server-down variant) or brought back up."""

    KIND = Kind.HOST
    host: str
    state: str
    """``down`` or ``up``."""
    port: int | None = None
    variant: str | None = None
    """The variant played (down), or the one it stopped playing (up)."""
    delay: float | None = None


class FaultsChanged(Record, frozen=True):
    KIND = Kind.FAULTS
    rules: tuple[str, ...]
    source: str = "clevertap"


class Note(Record, frozen=True):
    KIND = Kind.NOTE
    source: str
    what: str
    detail: str = ""


class SubmissionProbe(Record, frozen=True):
    """A submission the runner tried with bad credentials after the campaign, stopped before
    DATA (nothing is relayed even when the integration accepts it)."""

    KIND = Kind.SUBMISSION_PROBE
    probe: str
    """``wrong_password``, ``wrong_user`` or ``no_auth`` (``harness.vocab.SUBMISSION_PROBES``)."""
    username: str | None = None
    """The user name given to AUTH; None when the probe sends no AUTH."""
    auth_reply: str | None = None
    """What AUTH answered (``535 5.7.8 ...``, or why it was not possible); None without AUTH."""
    accepted: bool = False
    """The integration took it: AUTH answered 2xx, or a recipient was accepted without valid
    credentials."""
    stage: str | None = None
    """The step that decided: ``auth`` or ``rcpt`` when accepted, else the step refused
    (``auth``, ``mail``, ``rcpt``); ``connect``, ``starttls`` or ``ehlo`` when it failed first."""
    reply: str | None = None
    """The integration's reply at that step (``535 5.7.8 Authentication credentials invalid``)."""
    steps: tuple[str, ...] = ()
    """Each command and its reply, in order: ``AUTH PLAIN -> 535 5.7.8 ...``."""
    error: str | None = None
    """Why the probe could not finish (connection refused, TLS failed): then it proves
    nothing."""


RecordType: TypeAlias = (
    Callback
    | SmtpOpen
    | SmtpReply
    | SmtpMessage
    | SmtpClose
    | Dsn
    | DsnSkipped
    | Sent
    | Click
    | ViolationFound
    | HostChange
    | FaultsChanged
    | Note
    | SubmissionProbe
)

RECORD_TYPES: dict[Kind, type[Record]] = {
    t.KIND: t
    for t in (
        Callback,
        SmtpOpen,
        SmtpReply,
        SmtpMessage,
        SmtpClose,
        Dsn,
        DsnSkipped,
        Sent,
        Click,
        ViolationFound,
        HostChange,
        FaultsChanged,
        Note,
        SubmissionProbe,
    )
}
"""The record type of each kind."""

if set(RECORD_TYPES) != set(Kind):  # pragma: no cover - a kind without a type is a bug
    raise RuntimeError(f"kinds without a record type: {set(Kind) - set(RECORD_TYPES)}")


# -- the rules readers share -----------------------------------------------------------------------


def accepted_recipients(record: SmtpMessage) -> list[str]:
    """The recipients a message was accepted for, in the order given."""
    return [r.address for r in record.recipients]


def addresses_of(record: Record) -> tuple[str, ...]:
    """The recipient addresses a record is about (none for sessions, faults, notes).

    The one answer to "is this entry about that address": the journal's address index, the
    dashboard's recipient filter and story, and the control API's mail filters all use it.
    """
    if isinstance(record, Callback):
        return tuple(e.email for e in record.events)
    if isinstance(record, SmtpReply):
        return (record.recipient,)
    if isinstance(record, SmtpMessage):
        return tuple(r.address for r in record.recipients)
    if isinstance(record, Dsn):
        # An aliased DSN is about the address sent to (Original-Recipient) too.
        return tuple(a for r in record.recipients for a in (r.recipient, r.original) if a)
    if isinstance(record, DsnSkipped):
        return record.recipients
    if isinstance(record, Sent):
        return record.to
    if isinstance(record, Click):
        return (record.recipient,)
    if isinstance(record, ViolationFound):
        # The judge names the recipient in `extra` where it has one (no typed field yet).
        address = record.violation.extra.get("recipient")
        return (address,) if isinstance(address, str) else ()
    return ()


# -- JSON ------------------------------------------------------------------------------------------


def record_json(value: Any) -> Any:
    """*value* (a record, a nested struct, or plain data) as JSON types, with field names.

    Records are stored as arrays; people and the control API read objects. Structs marked
    ``JSON_ARRAY`` (callback events) stay arrays, as the documented JSON has always shown them.
    """
    if isinstance(value, msgspec.Struct):
        if getattr(value, "JSON_ARRAY", False):
            return [record_json(getattr(value, f)) for f in value.__struct_fields__]
        return {
            name: record_json(getattr(value, f))
            for f, name in zip(value.__struct_fields__, value.__struct_encode_fields__, strict=True)
        }
    if isinstance(value, tuple | list):
        return [record_json(v) for v in value]
    if isinstance(value, dict):
        return {k: record_json(v) for k, v in value.items()}
    if isinstance(value, StrEnum):
        return str(value)
    return value


def record_from_json(kind: Kind | str, data: Any) -> RecordType:
    """Build the record of *kind* from its JSON form (as :func:`record_json` writes it, or
    shorter: every field with a default may be left out). Raises ``msgspec.ValidationError``
    naming the field that is wrong."""
    record_type = RECORD_TYPES[Kind(kind)]
    fields = record_type.__struct_fields__
    names = record_type.__struct_encode_fields__
    defaults = record_type.__struct_defaults__
    required = len(fields) - len(defaults)
    if not isinstance(data, dict):
        raise msgspec.ValidationError(f"a {kind} record must be an object, not {data!r}")
    unknown = set(data) - set(names)
    if unknown:
        raise msgspec.ValidationError(
            f"unknown field(s) {', '.join(sorted(unknown))} in a {kind} record "
            f"(fields: {', '.join(names)})"
        )
    # Stored records are arrays; build the array in field order, defaults filling the gaps.
    row: list[Any] = []
    for i, name in enumerate(names):
        if name in data:
            row.append(data[name])
        elif i >= required:
            default = defaults[i - required]
            row.append(_default_json(default))
        else:
            raise msgspec.ValidationError(f"a {kind} record needs the field {name!r}")
    result: RecordType = msgspec.convert(row, record_type)  # type: ignore[assignment]
    return result


def _default_json(default: Any) -> Any:
    if default is msgspec.NODEFAULT:  # pragma: no cover - only required fields have none
        return None
    if isinstance(default, msgspec._core.Factory):
        return record_json(default.factory())
    return record_json(default)


def scrub(value: Any) -> Any:
    """*value* with every string made encodable as UTF-8 (lone surrogates escaped as ``\\udXXX``).

    Payloads can carry JSON escapes of lone surrogates (``"\\ud800"``), which Python decodes into
    strings that no UTF-8 encoder accepts. The journal stores what it can show: the escaped form.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, msgspec.Struct):
        changes = {f: scrub(getattr(value, f)) for f in value.__struct_fields__}
        return msgspec.structs.replace(value, **changes)
    if isinstance(value, tuple):
        return tuple(scrub(v) for v in value)
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    return value


# -- the reference page ----------------------------------------------------------------------------


def reference_markdown() -> str:
    """The field reference of every record type, as ``docs/journal.md`` shows it.

    Generated from the types themselves (their fields, types, defaults and the docstrings under
    each field), so the page cannot drift: ``python -m harness.records`` prints it and a test
    compares it with the page.
    """
    import ast
    import inspect
    import json
    import typing

    lines: list[str] = []
    nested: dict[str, type[msgspec.Struct]] = {}

    def describe(struct: type[msgspec.Struct], heading: str) -> None:
        source = inspect.getsource(struct)
        tree = ast.parse(source)
        docs: dict[str, str] = {}
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
        hints = typing.get_type_hints(struct)
        lines.append(heading)
        lines.append("")
        summary = (inspect.getdoc(struct) or "").split("\n\n")[0]
        lines.append(" ".join(summary.split()).replace("``", "`"))
        lines.append("")
        lines.append("| field | type | default | meaning |")
        lines.append("|---|---|---|---|")
        info = msgspec.structs.fields(struct)
        for field in info:
            hint = hints[field.name]
            shown = _type_name(hint, nested)
            if field.required:
                default = "required"
            elif field.default_factory is not msgspec.NODEFAULT:
                default = f"`{json.dumps(record_json(field.default_factory()))}`"
            else:
                default = f"`{json.dumps(record_json(field.default))}`"
            doc = docs.get(field.name, "").replace("|", "\\|").replace("``", "`")
            lines.append(f"| `{field.encode_name}` | {shown} | {default} | {doc} |")
        lines.append("")

    for kind, record_type in RECORD_TYPES.items():
        describe(record_type, f"### `{kind}`: `{record_type.__name__}`")
    done: set[str] = set()
    while set(nested) - done:
        for name in sorted(set(nested) - done):
            done.add(name)
            describe(nested[name], f"### `{name}`")
    return "\n".join(lines).rstrip() + "\n"


def _type_name(hint: Any, nested: dict[str, type[msgspec.Struct]]) -> str:
    import types
    import typing

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        nested.setdefault(hint.__name__, hint)
        return f"[{hint.__name__}](#{hint.__name__.lower()})"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a, nested) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0], nested)}"
        return "[" + ", ".join(_type_name(a, nested) for a in args) + "]"
    if origin is dict:
        return "object"
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return "string"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(hint, str(hint))
