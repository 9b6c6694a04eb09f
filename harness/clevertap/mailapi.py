"""The mail side of the control API, like Mailpit's: sessions, messages, DSNs, SMTP decisions,
and the fake MX hosts taken down and brought up at run time.

Everything is read from the journal (the typed records of :mod:`harness.records`), so it works
the same for a world in this process and for hosts served by other processes sharing a
PostgreSQL journal. A recipient filter reads the journal's address index
(:meth:`~harness.journal.Journal.about`); the other filters read one kind at a time (the kind
index) and check each record. Pages go forward: ``since`` (a seq, exclusive) and ``limit``;
``next`` is the ``since`` of the next page (null when there is none).

Host control needs the mail world itself: :attr:`CleverTapApp.mail` is set by
:class:`harness.world.World` (so ``harness serve SCENARIO`` has it); without a mail world the
host routes answer 409.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime.
import heapq
import mailbox
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from harness.errors import ConfigError, ServerError, UnknownNameError
from harness.journal import Entry, Journal
from harness.records import (
    Dsn,
    DsnSkipped,
    HostChange,
    Kind,
    RecordType,
    SmtpClose,
    SmtpMessage,
    SmtpOpen,
    SmtpReply,
    record_json,
)

if TYPE_CHECKING:
    from harness.clevertap.app import CleverTapApp

__all__ = [
    "MAIL_KINDS",
    "HostLike",
    "MailControl",
    "dsn_bytes",
    "mail_entries",
    "mail_router",
]

MAIL_KINDS: tuple[Kind, ...] = (
    Kind.SMTP_OPEN,
    Kind.SMTP_REPLY,
    Kind.SMTP_MESSAGE,
    Kind.SMTP_SESSION,
    Kind.DSN,
    Kind.DSN_SKIPPED,
    Kind.HOST,
)
"""The kinds of the mail side (what ``GET /mail`` lists)."""

MailKind = Literal[
    "smtp_open", "smtp_reply", "smtp_message", "smtp_session", "dsn", "dsn_skipped", "host"
]
_PAGE = 100
_MAX_PAGE = 1000


class HostLike(Protocol):
    """What the control API reads of a fake MX host (:class:`harness.smtp.server.MXHost`)."""

    name: str
    domains: tuple[str, ...] | list[str]
    relay: bool
    bind: str

    @property
    def port(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def drifted(self) -> bool: ...


class MailControl(Protocol):
    """What the control API needs of a mail world (:class:`harness.smtp.world.MailWorld`)."""

    @property
    def hosts(self) -> Mapping[str, Any]: ...
    def down(self, name: str, variant: str, *, delay: float | None = None) -> None: ...
    def up(self, name: str) -> None: ...
    def reset(self) -> None: ...
    def restore(self) -> None: ...


# -- reads ---------------------------------------------------------------------------------------


def _host_of(record: RecordType) -> str | None:
    if isinstance(record, SmtpOpen | SmtpReply | SmtpMessage | SmtpClose | DsnSkipped):
        return record.host
    if isinstance(record, Dsn | HostChange):
        return record.host
    return None


def _code_matches(record: RecordType, code: str) -> bool:
    """*code* is a reply code (``550``), a class (``5xx``) or an enhanced status (``5.1.1``):
    an SMTP decision's reply, a DSN recipient's status."""

    def one(basic: int | None, enhanced: str | None) -> bool:
        if code == enhanced:
            return True
        text = "" if basic is None else str(basic)
        if len(code) == 3 and code.endswith("xx"):
            return text[:1] == code[0]
        return text == code

    if isinstance(record, SmtpReply):
        return one(record.code, record.enhanced)
    if isinstance(record, Dsn):
        return any(
            code == r.status or (code.endswith("xx") and r.status[:1] == code[0])
            for r in record.recipients
        )
    return False


def mail_entries(
    journal: Journal,
    kinds: Iterable[Kind],
    *,
    recipient: str | None = None,
    host: str | None = None,
    code: str | None = None,
    predicate: Callable[[RecordType], bool] | None = None,
    since: int = 0,
    limit: int = _PAGE,
) -> tuple[list[Entry], int | None]:
    """Entries of *kinds* after *since* matching the filters, in order, at most *limit*; and
    the ``since`` of the next page (None when this one is the last)."""
    wanted = tuple(dict.fromkeys(kinds))
    source: Iterator[Entry]
    if recipient is not None:
        source = iter(journal.about(recipient, kinds=wanted, since=since))
    else:
        # One kind-index read per kind, merged in seq order.
        source = heapq.merge(
            *(journal.iter_entries(k, since=since) for k in wanted), key=lambda e: e.seq
        )
    found: list[Entry] = []
    for entry in source:
        record = entry.data
        if host is not None and _host_of(record) != host:
            continue
        if code is not None and not _code_matches(record, code):
            continue
        if predicate is not None and not predicate(record):
            continue
        if len(found) == limit:
            return found, found[-1].seq
        found.append(entry)
    return found, None


def dsn_bytes(record: Dsn) -> bytes | None:
    """The DSN as it was delivered, when it went into a Maildir (SMTP deliveries are not kept:
    the intake has them); None otherwise, or when it was moved or deleted since."""
    if record.transport != "maildir" or not record.maildir_key:
        return None
    try:
        box = mailbox.Maildir(record.intake, create=False)
        try:
            return box.get_bytes(record.maildir_key)
        finally:
            box.close()
    except (KeyError, OSError):
        return None  # moved or deleted since: the record still says what was sent


# -- models --------------------------------------------------------------------------------------


class MailEntry(BaseModel):
    seq: int
    at: float = Field(description="When the harness observed it, Unix seconds.")
    kind: str
    data: dict[str, Any] = Field(description="The record; see docs/journal.md for its fields.")


class MailPage(BaseModel):
    last_seq: int = Field(description="The newest journal entry now.")
    next: int | None = Field(
        description="Pass as `since` for the next page; null when this page is the last."
    )
    entries: list[MailEntry]


class SessionStory(BaseModel):
    session: str
    entries: list[MailEntry] = Field(
        description="Its opening, the decisions given, the messages accepted and its end."
    )


class HostState(BaseModel):
    name: str
    domains: list[str]
    relay: bool
    address: str = Field(description="host:port it listens on (kept when down).")
    state: str = Field(description="`up` or the server-down variant it plays.")
    drifted: bool = Field(description="Taken down or brought up at run time (reset restores).")


class HostList(BaseModel):
    hosts: list[HostState]
    variants: list[str] = Field(description="The server-down variants a host can play.")


class HostDown(BaseModel):
    variant: str = Field(description="A server-down variant, e.g. `refused`, `tarpit`.")
    delay: float | None = Field(None, ge=0, description="`slow` only: seconds per reply.")


def _eml(raw: bytes, name: str) -> Response:
    """*raw* as the download ``<name>.eml``."""
    return Response(
        raw,
        media_type="message/rfc822",
        headers={"content-disposition": f'attachment; filename="{name}.eml"'},
    )


def _model(entry: Entry) -> MailEntry:
    return MailEntry(seq=entry.seq, at=entry.at, kind=str(entry.kind), data=record_json(entry.data))


def _host_state(host: Any) -> HostState:
    return HostState(
        name=host.name,
        domains=list(host.domains),
        relay=host.relay,
        address=f"{host.bind}:{host.port}",
        state=host.state,
        drifted=host.drifted,
    )


# -- routes --------------------------------------------------------------------------------------


def mail_router(app: "CleverTapApp") -> APIRouter:
    """The mail routes; the caller mounts them under the control prefix (with its token)."""
    router = APIRouter(tags=["mail"])

    Recipient = Annotated[str | None, Query(description="A recipient address (any case).")]
    Host = Annotated[str | None, Query(description="A fake MX host's name, e.g. `example.com`.")]
    Code = Annotated[
        str | None,
        Query(description="A reply code (`550`), class (`5xx`) or enhanced status (`5.1.1`)."),
    ]
    Since = Annotated[int, Query(ge=0, description="Only entries with a larger seq.")]
    Limit = Annotated[int, Query(ge=1, le=_MAX_PAGE, description="At most this many.")]

    def listing(kinds: Iterable[Kind], **filters: Any) -> MailPage:
        last = app.journal.last_seq
        found, following = mail_entries(app.journal, kinds, **filters)
        return MailPage(last_seq=last, next=following, entries=[_model(e) for e in found])

    # Plain `def`: run in the thread pool, so a long read never stalls the callbacks' loop.
    @router.get("/mail", response_model=MailPage, summary="Everything on the mail side")
    def mail(
        kind: Annotated[
            list[MailKind] | None, Query(description="Entry kinds; repeatable.")
        ] = None,
        recipient: Recipient = None,
        host: Host = None,
        code: Code = None,
        since: Since = 0,
        limit: Limit = _PAGE,
    ) -> MailPage:
        """SMTP connections, decisions, messages, sessions, DSNs and host changes, in order."""
        kinds = [Kind(k) for k in kind] if kind else MAIL_KINDS
        return listing(kinds, recipient=recipient, host=host, code=code, since=since, limit=limit)

    @router.get("/sessions", response_model=MailPage, summary="SMTP sessions that ended")
    def sessions(
        host: Host = None,
        end: Annotated[
            str | None,
            Query(description="How it ended: `quit`, `client_dropped`, `server_dropped`, ..."),
        ] = None,
        since: Since = 0,
        limit: Limit = _PAGE,
    ) -> MailPage:
        """Each with its transcript (bounded), the messages accepted in it and how it ended."""

        def ended(record: RecordType) -> bool:
            return end is None or (isinstance(record, SmtpClose) and record.end == end)

        return listing([Kind.SMTP_SESSION], host=host, predicate=ended, since=since, limit=limit)

    @router.get(
        "/sessions/{session}",
        response_model=SessionStory,
        summary="One SMTP session",
        responses={404: {"description": "No entry of that session."}},
    )
    def one_session(session: str) -> SessionStory:
        """Its opening, every decision given, the messages accepted and its end, in order."""

        def mine(record: RecordType) -> bool:
            return getattr(record, "session", None) == session

        kinds = (Kind.SMTP_OPEN, Kind.SMTP_REPLY, Kind.SMTP_MESSAGE, Kind.SMTP_SESSION)
        host = session.rsplit("-", 1)[0]  # session ids are `<host>-<n>`
        found, _ = mail_entries(app.journal, kinds, host=host, predicate=mine, limit=_MAX_PAGE)
        if not found:
            raise HTTPException(404, f"no SMTP session {session!r} in the journal")
        return SessionStory(session=session, entries=[_model(e) for e in found])

    @router.get("/messages", response_model=MailPage, summary="Messages accepted")
    def messages(
        recipient: Recipient = None,
        host: Host = None,
        sender: Annotated[str | None, Query(description="The envelope sender.")] = None,
        since: Since = 0,
        limit: Limit = _PAGE,
    ) -> MailPage:
        """Messages a fake MX host or the relay accepted (250 after DATA), with headers and body;
        `GET messages/{seq}.eml` downloads one."""

        def sent_by(record: RecordType) -> bool:
            return sender is None or (
                isinstance(record, SmtpMessage) and record.sender.casefold() == sender.casefold()
            )

        return listing(
            [Kind.SMTP_MESSAGE],
            recipient=recipient,
            host=host,
            predicate=sent_by,
            since=since,
            limit=limit,
        )

    def eml_route(
        path: str, summary: str, found: str, missing: str
    ) -> Callable[[Callable[[int], Response]], Callable[[int], Response]]:
        """The GET route of one journaled mail as a downloadable .eml file."""
        return router.get(
            path,
            summary=summary,
            response_class=Response,
            responses={
                200: {"content": {"message/rfc822": {}}, "description": found},
                404: {"description": missing},
            },
        )

    @eml_route(
        "/messages/{seq}.eml",
        "One message as an .eml file",
        "The raw message.",
        "No message entry with that seq.",
    )
    def message_eml(seq: int) -> Response:
        found = app.journal.get(seq)
        if found is None or not isinstance(found.data, SmtpMessage):
            raise HTTPException(404, f"journal entry {seq} is not an accepted message")
        return _eml(found.data.eml(), found.data.id)

    @router.get("/dsns", response_model=MailPage, summary="DSNs sent, and those not sent")
    def dsns(
        recipient: Recipient = None,
        host: Host = None,
        code: Code = None,
        since: Since = 0,
        limit: Limit = _PAGE,
    ) -> MailPage:
        """Each `dsn` entry is a DSN delivered (or not) to the bounce intake; each
        `dsn_skipped` one that was due and not sent, with the reason."""
        return listing(
            [Kind.DSN, Kind.DSN_SKIPPED],
            recipient=recipient,
            host=host,
            code=code,
            since=since,
            limit=limit,
        )

    @eml_route(
        "/dsns/{seq}.eml",
        "One DSN as delivered (Maildir intakes)",
        "The DSN as delivered.",
        "No DSN with that seq kept in a Maildir.",
    )
    def dsn_eml(seq: int) -> Response:
        """The raw DSN, when it was delivered into a Maildir intake (one delivered over SMTP is
        the intake's to keep: the `dsn` entry says what was sent)."""
        found = app.journal.get(seq)
        raw = dsn_bytes(found.data) if found is not None and isinstance(found.data, Dsn) else None
        if raw is None:
            raise HTTPException(404, f"journal entry {seq} is no DSN kept in a Maildir")
        return _eml(raw, f"dsn-{seq}")

    @router.get("/decisions", response_model=MailPage, summary="SMTP replies that decided")
    def decisions(
        recipient: Recipient = None,
        host: Host = None,
        code: Code = None,
        stage: Annotated[
            str | None, Query(description="`rcpt`, `data`, `end_of_data` or `later`.")
        ] = None,
        since: Since = 0,
        limit: Limit = _PAGE,
    ) -> MailPage:
        """Every reply that decided a recipient (`smtp_reply` records), as it was given."""

        def at_stage(record: RecordType) -> bool:
            return stage is None or (isinstance(record, SmtpReply) and record.stage == stage)

        return listing(
            [Kind.SMTP_REPLY],
            recipient=recipient,
            host=host,
            code=code,
            predicate=at_stage,
            since=since,
            limit=limit,
        )

    # -- hosts down and up -----------------------------------------------------------------------

    def world() -> MailControl:
        if app.mail is None:
            raise HTTPException(
                409,
                "this server has no mail world (plain `harness serve`): start it with a "
                "SCENARIO, or serve a World",
            )
        return app.mail

    def host_list(mail: MailControl) -> HostList:
        from harness.smtp.catalog import SERVER_DOWN

        return HostList(
            hosts=[_host_state(h) for h in mail.hosts.values()], variants=list(SERVER_DOWN)
        )

    def switch(action: Callable[[], None], name: str, mail: MailControl) -> HostState:
        try:
            action()
        except UnknownNameError as exc:
            status = 404 if exc.what == "host" else 422
            raise HTTPException(status, str(exc)) from None
        except (ConfigError, ServerError) as exc:
            raise HTTPException(409, str(exc)) from None
        return _host_state(mail.hosts[name])

    @router.get("/hosts", response_model=HostList, summary="The fake MX hosts and their state")
    async def hosts() -> HostList:
        return host_list(world())

    # async: a host switches in the event loop that serves it, which is this one.
    @router.post(
        "/hosts/{name}/down",
        response_model=HostState,
        summary="Take a host down (a server-down variant)",
        responses={404: {"description": "No such host."}, 422: {"description": "Bad variant."}},
    )
    async def host_down(name: str, body: HostDown) -> HostState:
        """From now on the host plays *variant* on the same port (journaled as a `host`
        entry). `refused` also ends its open sessions. `POST /reset` brings it back."""
        mail = world()
        return switch(lambda: mail.down(name, body.variant, delay=body.delay), name, mail)

    @router.post(
        "/hosts/{name}/up",
        response_model=HostState,
        summary="Bring a host back up",
        responses={404: {"description": "No such host."}},
    )
    async def host_up(name: str) -> HostState:
        """The host serves normally again, on the same port (journaled as a `host` entry)."""
        mail = world()
        return switch(lambda: mail.up(name), name, mail)

    return router
