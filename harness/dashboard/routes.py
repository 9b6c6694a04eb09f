"""The dashboard's HTTP routes: server-rendered pages at ``/`` and the live stream.

Pages (``/``, ``/recipient/{address}``, ``/entry/{seq}``, ``/session/{id}``, ``/checks``) are
rendered by Jinja2 from the typed records; ``{control}/events`` streams new entries as
server-sent events, each carrying its table row rendered by the same template as the page, so a
row looks the same whether it came with the page or live. The controls on the page call the
control API from the browser (``dashboard.js``).

Token: when the server has one, the pages and the stream want it like the control API does
(``Authorization: Bearer``) or in the cookie that ``/login`` sets after the token was typed in
(a browser cannot put a header on a page it navigates to, nor on an ``EventSource``).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime.
import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.staticfiles import StaticFiles

from harness.checks import all_checks
from harness.clevertap.faults import FaultRule
from harness.clevertap.mailapi import dsn_bytes
from harness.dashboard import views
from harness.dashboard.reads import Filter, page, session_entries, story
from harness.journal import Entry
from harness.records import Callback, Dsn, Kind, SmtpClose, SmtpMessage, record_json

if TYPE_CHECKING:
    from harness.clevertap.app import CleverTapApp

__all__ = ["mount_dashboard"]

COOKIE = "harness_token"
"""Prefix of the login cookie's name, which ends with the server's port: browsers share cookies
between the ports of one host, and two harness servers on one machine have their own tokens."""
_KEEPALIVE = 15.0
"""Seconds between comments on an idle stream, so proxies and browsers keep it open."""
_BACKLOG = 500
"""Entries a (re)connecting stream catches up on; past that it asks the page to reload."""

_ENV = Environment(
    loader=PackageLoader("harness.dashboard", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.do"],
)
_ENV.globals.update(clock=views.clock, summary=views.summary, quote=quote)


def _cookie(request: Request) -> str:
    return f"{COOKIE}_{request.url.port or 80}"


def _kind(value: str | None) -> Kind | None:
    return Kind(value) if value else None


def mount_dashboard(app: "CleverTapApp") -> None:
    """Serve the dashboard from *app*: pages at ``/``, the stream under the control prefix."""
    settings = app.settings
    prefix = settings.control_prefix
    router = APIRouter(include_in_schema=False)

    def authorized(request: Request) -> bool:
        if settings.token is None:
            return True
        header = request.headers.get("authorization", "")
        given = (
            header[7:]
            if header.lower().startswith("bearer ")
            else request.cookies.get(_cookie(request))
        )
        return given is not None and secrets.compare_digest(given.encode(), settings.token.encode())

    def to_login(request: Request) -> Response:
        target = quote(request.url.path + ("?" + request.url.query if request.url.query else ""))
        return RedirectResponse(f"/login?next={target}", status_code=303)

    def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        # Handlers that read the journal call authorized() first, so nobody without the token
        # makes the server do the work; this check covers the rest.
        if not authorized(request):
            return to_login(request)
        body = _ENV.get_template(template).render(
            control=prefix,
            token=settings.token or "",
            faults=_faults(app),
            hosts=_hosts(app),
            scenario=app.scenario is not None,
            **context,
        )
        return HTMLResponse(body, status_code=status)

    KindQuery = Annotated[str | None, Query(description="An entry kind.")]
    Text = Annotated[str | None, Query()]

    def make_filter(
        kind: str | None, address: str | None, event: str | None, code: str | None
    ) -> Filter:
        return Filter(
            kind=_kind(kind), address=address or None, event=event or None, code=code or None
        )

    @router.get("/", response_class=HTMLResponse)
    def index(
        request: Request,
        kind: KindQuery = None,
        address: Text = None,
        event: Text = None,
        code: Text = None,
        before: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        if not authorized(request):
            return to_login(request)
        try:
            flt = make_filter(kind, address, event, code)
        except ValueError:
            return PlainTextResponse(
                f"unknown kind {kind!r}; expected one of {', '.join(Kind)}", status_code=400
            )
        found = page(app.journal, flt, before=before)
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "before"]
        older = urlencode([*params, ("before", str(found.older))]) if found.older else ""
        return render(
            request,
            "index.html",
            page=found,
            flt=flt,
            kinds=list(Kind),
            query=urlencode(params),
            query_older=older,
            live=before is None,
        )

    @router.get("/recipient/", response_class=HTMLResponse)
    def find_recipient(address: str = "") -> Response:
        # The search form's GET target: on to the story's own address.
        return RedirectResponse(f"/recipient/{quote(address.strip(), safe='@')}", status_code=303)

    @router.get("/recipient/{address:path}", response_class=HTMLResponse)
    def recipient(request: Request, address: str) -> Response:
        if not authorized(request):
            return to_login(request)
        return render(request, "recipient.html", story=story(app.journal, address), views=views)

    @router.get("/entry/{seq}", response_class=HTMLResponse)
    def entry(request: Request, seq: int) -> Response:
        if not authorized(request):
            return to_login(request)
        found = app.journal.get(seq)
        if found is None:
            return render(request, "missing.html", status=404, what=f"entry {seq}")
        context: dict[str, Any] = {"entry": found, "record": found.data}
        record = found.data
        if isinstance(record, Callback):
            context["payload"] = _payload(record)
        if isinstance(record, SmtpClose):
            context["transcript"] = views.transcript(record)
        if isinstance(record, Dsn):
            raw = dsn_bytes(record)
            context["raw_dsn"] = None if raw is None else raw.decode("utf-8", "replace")
        context["json"] = json.dumps(record_json(record), indent=2, ensure_ascii=False)
        return render(request, "entry.html", **context)

    @router.get("/entry/{seq}/message.eml")
    def message_eml(request: Request, seq: int) -> Response:
        if not authorized(request):
            return PlainTextResponse("token required", status_code=401)
        found = app.journal.get(seq)
        if found is None or not isinstance(found.data, SmtpMessage):
            return PlainTextResponse(f"entry {seq} is not a message", status_code=404)
        return Response(
            found.data.eml(),
            media_type="message/rfc822",
            headers={"content-disposition": f'attachment; filename="{found.data.id}.eml"'},
        )

    @router.get("/entry/{seq}/dsn.eml")
    def dsn_eml(request: Request, seq: int) -> Response:
        if not authorized(request):
            return PlainTextResponse("token required", status_code=401)
        found = app.journal.get(seq)
        raw = dsn_bytes(found.data) if found and isinstance(found.data, Dsn) else None
        if raw is None:
            return PlainTextResponse(f"entry {seq} is no DSN kept in a Maildir", status_code=404)
        return Response(
            raw,
            media_type="message/rfc822",
            headers={"content-disposition": f'attachment; filename="dsn-{seq}.eml"'},
        )

    @router.get("/session/{session}", response_class=HTMLResponse)
    def session(request: Request, session: str) -> Response:
        if not authorized(request):
            return to_login(request)
        entries = session_entries(app.journal, session)
        closing = next((e for e in entries if isinstance(e.data, SmtpClose)), None)
        lines = []
        if closing is not None and isinstance(closing.data, SmtpClose):
            lines = views.transcript(closing.data)
        return render(request, "session.html", session=session, entries=entries, transcript=lines)

    @router.get("/fragment/faults", response_class=HTMLResponse)
    def faults_fragment(request: Request) -> Response:
        # The live page refreshes its "Faults now" line (the counters move with each callback)
        # from here, so the rules are spelled by FaultRule.describe() alone.
        return render(request, "_faults.html")

    @router.get("/fragment/hosts", response_class=HTMLResponse)
    def hosts_fragment(request: Request) -> Response:
        # The hosts' states follow their `host` entries live (like the fault counters).
        return render(request, "_hosts.html")

    def judged(since: int) -> Any:
        """The scenario's verdict on the journal after *since*, now; None without a scenario."""
        scenario = app.scenario
        if scenario is None:
            return None
        # Imported here: the judge and rich are only needed for the report.
        from harness.scenario.judge import judge
        from harness.scenario.judge_cli import window
        from harness.scenario.model import Scenario

        if not isinstance(scenario, Scenario):  # pragma: no cover - World sets a Scenario
            raise TypeError(f"app.scenario is not a Scenario: {scenario!r}")
        return judge(scenario, app.journal, started=window(app.journal, since))

    @router.get("/report", response_class=HTMLResponse)
    def report(request: Request, since: Annotated[int, Query(ge=0)] = 0) -> Response:
        """The scenario's report, judged now on the journal after *since* (as `harness judge`
        would print it)."""
        if not authorized(request):
            return to_login(request)
        verdict = judged(since)
        if verdict is None:
            return render(
                request,
                "missing.html",
                status=404,
                what="scenario to judge: this server was started without one (harness serve "
                "SCENARIO has one)",
            )
        from harness.scenario.report import render_html

        return render(
            request,
            "report.html",
            verdict=verdict,
            report=Markup(render_html(verdict)),
            since=since,
        )

    # Here, not in the control API's module: it needs the scenario machinery, which sits above
    # the fake CleverTap. Listed in the OpenAPI document with the control API all the same.
    @app.get(
        f"{prefix}/report",
        tags=["control"],
        summary="The scenario judged now (the JSON report of harness judge)",
        responses={404: {"description": "The server has no scenario."}},
    )
    def report_json_route(
        request: Request,
        since: Annotated[int, Query(ge=0, description="Judge the entries after this seq.")] = 0,
    ) -> Response:
        """The JSON report `harness judge --json` writes (`format`, `version`, `passed`,
        `summary`, `scenarios`), judged on the journal now; cross-check violations found are
        added to the journal once."""
        if not authorized(request):
            return JSONResponse(
                {"detail": "the control API needs 'Authorization: Bearer <token>'"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        verdict = judged(since)
        if verdict is None:
            return JSONResponse(
                {"detail": "this server has no scenario to judge (harness serve SCENARIO has)"},
                status_code=404,
            )
        from harness.scenario.report import report_json

        return JSONResponse(report_json([verdict]))

    @router.get("/favicon.ico")
    def favicon() -> Response:
        # Browsers ask for it on their own: answered (no icon) rather than journaled as a
        # request to a wrong path.
        return Response(status_code=204)

    @router.get("/checks", response_class=HTMLResponse)
    def checks(request: Request) -> Response:
        return render(request, "checks.html", checks=all_checks())

    @router.get("/login", response_class=HTMLResponse)
    def login_form(next: str = "/") -> HTMLResponse:
        return HTMLResponse(_ENV.get_template("login.html").render(next=next, wrong=False))

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        # A plain urlencoded form: parsed here rather than pulling in python-multipart.
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = form.get("token", [""])[0]
        target = form.get("next", ["/"])[0]
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # never an open redirect
        if settings.token is None or secrets.compare_digest(
            given.encode(), settings.token.encode()
        ):
            response = RedirectResponse(target, status_code=303)
            if settings.token is not None:
                response.set_cookie(_cookie(request), given, httponly=True, samesite="strict")
            return response
        body = _ENV.get_template("login.html").render(next=target, wrong=True)
        return HTMLResponse(body, status_code=401)

    @router.get(f"{prefix}/events")
    async def events(
        request: Request,
        since: Annotated[int | None, Query(ge=0)] = None,
        kind: KindQuery = None,
        address: Text = None,
        event: Text = None,
        code: Text = None,
    ) -> Response:
        if not authorized(request):
            return Response(
                json.dumps({"detail": "the event stream needs the token (Bearer or /login)"}),
                status_code=401,
                media_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            flt = make_filter(kind, address, event, code)
        except ValueError:
            return PlainTextResponse(f"unknown kind {kind!r}", status_code=400)
        resume = request.headers.get("last-event-id", "")
        start = int(resume) if resume.isdigit() else since
        return StreamingResponse(
            _stream(app, flt, app.journal.last_seq if start is None else start),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    app.include_router(router)
    app.mount(
        "/static/dashboard",
        StaticFiles(packages=[("harness.dashboard", "static")]),
        name="dashboard-static",
    )


def _faults(app: "CleverTapApp") -> list[str]:
    """The fault rules as written (``503,first=1``) with their counters."""
    shown = []
    for state in app.faults.snapshot():
        counters = {"seen": state.pop("seen"), "applied": state.pop("applied")}
        rule = FaultRule.model_validate(state).describe()
        shown.append(f"{rule} (seen {counters['seen']}, applied {counters['applied']})")
    return shown


def _hosts(app: "CleverTapApp") -> list[dict[str, Any]]:
    """The fake MX hosts and their state, when the server has a mail world."""
    if app.mail is None:
        return []
    from harness.smtp.catalog import SERVER_DOWN

    return [
        {
            "name": host.name,
            "address": f"{host.bind}:{host.port}",
            "state": host.state,
            "drifted": host.drifted,
            "variants": SERVER_DOWN,
        }
        for host in app.mail.hosts.values()
    ]


def _payload(record: Callback) -> Any:
    if record.body_base64:
        return None
    marked = {v.path for v in record.violations}
    return views.payload_html(record.body, marked)


def _sse(entry: Entry) -> str:
    row = _ENV.get_template("_row.html").render(e=entry)
    data = json.dumps({"seq": entry.seq, "kind": str(entry.kind), "html": row})
    return f"id: {entry.seq}\nevent: entry\ndata: {data}\n\n"


async def _stream(app: "CleverTapApp", flt: Filter, since: int) -> AsyncIterator[str]:
    """Entries after *since* that match *flt*, as they are committed, until the client goes
    or the server stops."""
    journal = app.journal
    loop = asyncio.get_running_loop()
    # Bounded: a client that stops reading (a tab in the background, a stalled proxy) must not
    # make the server keep every entry for it. Past the bound it is told to reload (a gap).
    queue: asyncio.Queue[Entry] = asyncio.Queue(maxsize=_BACKLOG * 10)
    overflowed = asyncio.Event()

    def put(entry: Entry) -> None:
        try:
            queue.put_nowait(entry)
        except asyncio.QueueFull:
            overflowed.set()

    def on_entry(entry: Entry) -> None:
        # Called in the committing thread; must not raise (a closed loop after shutdown).
        try:
            loop.call_soon_threadsafe(put, entry)
        except RuntimeError:
            pass

    remove: Callable[[], None] = journal.subscribe(on_entry)
    stopping = asyncio.ensure_future(app.stopping.wait())
    getter: asyncio.Future[Entry] | None = None
    try:
        yield "retry: 2000\n\n"
        # Subscribed first, then caught up: an entry committed in between is in both, and the
        # seq check below drops the second copy.
        backlog = await asyncio.to_thread(page, journal, flt, limit=_BACKLOG)
        newer = [e for e in reversed(backlog.entries) if e.seq > since]
        if backlog.older is not None and backlog.older - 1 > since:
            # More happened since then than a stream catches up on: the page reloads.
            yield "event: gap\ndata: {}\n\n"
        last = since
        for entry in newer:
            last = entry.seq
            yield _sse(entry)
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getter, stopping}, timeout=_KEEPALIVE, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                if stopping in done:
                    return
                yield ": keepalive\n\n"
                continue
            if overflowed.is_set():
                yield "event: gap\ndata: {}\n\n"
                return
            entry = getter.result()
            if entry.seq > last and flt.matches(entry):
                last = entry.seq
                yield _sse(entry)
    finally:
        # The client went away (the server cancels us) or the server stops: leave no task.
        remove()
        for task in (getter, stopping):
            if task is not None:
                task.cancel()
