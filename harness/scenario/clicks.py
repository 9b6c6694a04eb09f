"""The unsubscribe clicker: plays a recipient who unsubscribes from the message they received.

A click waits until the recipient's message reached its fake mail server (the
:data:`~harness.journal.Kind.SMTP_MESSAGE` entry), waits the click's ``after``, then reads what
the integration put in that message:

- ``one_click``: RFC 8058. Needs an HTTPS/HTTP URI in ``List-Unsubscribe`` (RFC 2369) *and*
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; a mail client offers one-click only
  with both. POSTs ``List-Unsubscribe=One-Click`` form-encoded, without cookies, and does not
  follow redirects (RFC 8058 section 3.2).
- ``get``: opens the link (``List-Unsubscribe`` URI, else the first link in the body) as a
  person would: follows redirects (at most :data:`MAX_HOPS`) and, when the page is a form that
  posts back, submits it (the confirm button), since a GET alone must not unsubscribe (link
  scanners fetch URLs).
- ``mailto``: mails the ``mailto:`` address of ``List-Unsubscribe`` (with its ``subject`` and
  ``body`` if given) through the integration's bounce intake, else its submission port.
- ``scan``: plays a mail security scanner (Safe Links, Mimecast, a previewer): GETs every
  http(s) URI of ``List-Unsubscribe`` and every link of the body (at most :data:`MAX_SCANNED`),
  follows their redirects, and submits nothing: no form, no POST. It is not an unsubscribe
  action; an unsubscribe callback it caused is CT507.

The clicker contacts only the harness's own world (:class:`ClickScope`): loopback, the hosts
the integration announced, and the scenario's ``unsubscribe_allow_hosts``. Every URL is checked
before it is requested, each redirect hop included (redirects are followed here, hop by hop,
not by httpx), so that a message cannot send the harness to an arbitrary machine.

Each click is journaled as one :class:`harness.records.Click` record; ``refused`` says why a
URL was not contacted (outside the scope), and ``error`` then says so too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import aiosmtplib
import httpx

from harness.journal import Entry, Journal, Kind
from harness.records import Click as ClickRecord
from harness.records import SmtpMessage, record_from_json
from harness.scenario.campaign import Submission
from harness.scenario.model import Click
from harness.vocab import SCAN

__all__ = [
    "MAX_HOPS",
    "MAX_SCANNED",
    "SCANNER_AGENT",
    "ClickScope",
    "click_notes",
    "list_unsubscribe_uris",
    "perform_click",
]

_URI = re.compile(r"<\s*([^>]*?)\s*>")
_BODY_LINK = re.compile(r"https?://[^\s<>\"')]+")
ONE_CLICK = "List-Unsubscribe=One-Click"
MAX_HOPS = 10
"""Redirects a ``get`` click follows at most (per request it makes)."""
MAX_SCANNED = 20
"""Links a ``scan`` fetches at most (List-Unsubscribe first, then the body's, in order)."""
SCANNER_AGENT = "harness-link-scanner/1 (fetches links, submits nothing)"
"""The User-Agent of ``scan`` fetches (so an integration's log can tell them apart)."""

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host_of(text: str) -> str | None:
    """The host of a URL or of ``host[:port]``, lowercased, IPv6 without brackets."""
    try:
        return urlsplit(text if "://" in text else "//" + text).hostname
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ClickScope:
    """The hosts the clicker may contact: loopback always, plus *names* (exact), subdomains of
    *suffixes* and addresses in *networks*. Build one with :meth:`build`."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[_Network, ...] = ()

    @classmethod
    def build(cls, allow: Iterable[str] = (), announced: Iterable[str | None] = ()) -> ClickScope:
        """The scope of a run: *allow* is the scenario's ``unsubscribe_allow_hosts`` (names,
        ``*.domain``, IP addresses, networks), *announced* the integration's addresses (hosts,
        ``host:port`` or URLs; None entries are skipped)."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[_Network] = []
        for pattern in allow:
            text = pattern.strip().lower()
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            if text.startswith("*."):
                suffixes.append(text[1:])  # ".example.com"
            else:
                names.add(text)
        for address in announced:
            host = _host_of(address) if address else None
            if host:
                names.add(host)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def refusal(self, url: str) -> str | None:
        """Why *url* must not be contacted, or None when it may."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            return f"{url!r} is not a valid URL"
        if parts.scheme.lower() not in ("http", "https"):
            return f"{url!r} is not an http(s) URL"
        if not host:
            return f"{url!r} names no host"
        if host in self.names or host == "localhost":
            return None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if any(host.endswith(suffix) for suffix in self.suffixes):
                return None
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if ip.is_loopback or any(ip in network for network in self.networks):
                return None
        return (
            f"{host} is outside the harness's world (loopback and the integration's announced "
            "addresses); list it in the scenario's unsubscribe_allow_hosts to allow it"
        )


def click_notes(entries: Iterable[Entry]) -> list[str]:
    """One line per refused click of *entries* (other entries are skipped), for reports."""
    return [
        f"the {e.data.via} click by {e.data.recipient} was refused: {e.data.refused}"
        for e in entries
        if isinstance(e.data, ClickRecord) and e.data.refused
    ]


def list_unsubscribe_uris(header: str | None) -> list[str]:
    """The URIs of a ``List-Unsubscribe`` header, in order (RFC 2369: each in angle brackets)."""
    if not header:
        return []
    return [uri for uri in _URI.findall(" ".join(header.split())) if uri]


def _delivered_to(recipient: str) -> Any:
    def match(entry: Entry) -> bool:
        return isinstance(entry.data, SmtpMessage) and entry.data.has_recipient(recipient)

    return match


async def perform_click(
    click: Click,
    journal: Journal,
    *,
    deadline: float,
    intake: Submission | None,
    since: int = 0,
    scope: ClickScope | None = None,
) -> Entry:
    """Perform *click* once its message arrived (waiting until *deadline*, a ``time.time()``);
    journal and return the CLICK entry. Never raises for what the integration does wrong.

    *scope* says which hosts the click may contact; None means loopback only."""
    scope = scope if scope is not None else ClickScope()
    record: dict[str, Any] = {
        "recipient": click.recipient,
        "via": click.via,
        "url": None,
        "status": None,
        "ok": False,
        "error": None,
        "message_seq": None,
        "steps": [],
    }
    message = await journal.wait_for_async(
        _delivered_to(click.recipient), max(0.0, deadline - time.time()), since=since
    )
    if message is None:
        record["error"] = (
            f"no message to {click.recipient} reached its mail server before the deadline; "
            "nothing to click"
        )
        return journal.append(record_from_json(Kind.CLICK, record))
    record["message_seq"] = message.seq
    wait = message.at + click.after - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
    try:
        if not isinstance(message.data, SmtpMessage):  # pragma: no cover - _delivered_to
            raise TypeError("the delivered message is not an SmtpMessage entry")
        await _act(click, message.data, record, intake, scope)
    except (httpx.HTTPError, aiosmtplib.SMTPException, OSError) as exc:
        record["ok"] = False
        record["error"] = f"{type(exc).__name__}: {exc}"
    return journal.append(record_from_json(Kind.CLICK, record))


async def _act(
    click: Click,
    data: SmtpMessage,
    record: dict[str, Any],
    intake: Submission | None,
    scope: ClickScope,
) -> None:
    uris = list_unsubscribe_uris(data.list_unsubscribe)
    http = next((u for u in uris if u.lower().startswith(("https:", "http:"))), None)
    mailto = next((u for u in uris if u.lower().startswith("mailto:")), None)
    if click.via == "one_click":
        post = " ".join((data.list_unsubscribe_post or "").split())
        if http is None:
            record["error"] = _missing("an http(s) URI in List-Unsubscribe", data)
            return
        record["url"] = http
        if post != ONE_CLICK:
            record["error"] = (
                f"List-Unsubscribe-Post is {post or 'missing'!r}, not {ONE_CLICK!r}: the message "
                "does not offer RFC 8058 one-click unsubscription"
            )
            return
        await _one_click(http, record, scope)
    elif click.via == SCAN:
        urls = [u for u in uris if u.lower().startswith(("https:", "http:"))]
        urls = list(dict.fromkeys(urls + _body_links(data.body)))[:MAX_SCANNED]
        if not urls:
            record["error"] = _missing("an http(s) link in List-Unsubscribe or the body", data)
            return
        record["url"] = urls[0]
        await _scan(urls, record, scope)
    elif click.via == "get":
        url = http or _body_link(data.body)
        if url is None:
            record["error"] = _missing("an http(s) link in List-Unsubscribe or the body", data)
            return
        record["url"] = url
        await _open_link(url, record, scope)
    else:
        if mailto is None:
            record["error"] = _missing("a mailto: URI in List-Unsubscribe", data)
            return
        record["url"] = mailto
        if intake is None:
            record["error"] = "the integration's SMTP address is unknown: cannot send the mail"
            return
        await _send_mailto(mailto, click.recipient, intake, record)


def _missing(what: str, data: SmtpMessage) -> str:
    header = data.list_unsubscribe
    seen = f"List-Unsubscribe: {header}" if header else "no List-Unsubscribe header"
    return f"the delivered message has no {what} ({seen})"


def _body_link(body: str) -> str | None:
    match = _BODY_LINK.search(body)
    return match.group().rstrip(".,;") if match else None


def _body_links(body: str) -> list[str]:
    return [match.group().rstrip(".,;") for match in _BODY_LINK.finditer(body)]


def _refuse(record: dict[str, Any], url: str, scope: ClickScope) -> bool:
    """Record and say whether *url* is outside *scope*."""
    why = scope.refusal(url)
    if why is None:
        return False
    record["refused"] = why
    record["error"] = f"refused to contact {url}: {why}"
    return True


async def _one_click(url: str, record: dict[str, Any], scope: ClickScope) -> None:
    if _refuse(record, url, scope):
        return
    # A fresh client per click: no cookie jar shared between recipients (RFC 8058 says the POST
    # carries no cookies), and redirects are not followed.
    async with httpx.AsyncClient(follow_redirects=False, timeout=10.0) as client:
        response = await client.post(
            url,
            content=ONE_CLICK.encode("ascii"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    record["steps"].append({"method": "POST", "url": url, "status": response.status_code})
    record["status"] = response.status_code
    if response.is_redirect:
        record["error"] = (
            f"answered {response.status_code} with a redirect to "
            f"{response.headers.get('location')!r}: one-click POSTs do not follow redirects "
            "(RFC 8058 section 3.2), so the unsubscription must happen on the POST itself"
        )
    elif not response.is_success:
        record["error"] = f"answered HTTP {response.status_code}"
    else:
        record["ok"] = True


class _Form(HTMLParser):
    """The first ``<form method=post>`` of a page: its action and its named inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._inside = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done and values.get("method", "get").lower() == "post":
            self.action = values.get("action", "")
            self._inside = True
        elif (
            tag == "input"
            and self._inside
            and values.get("name")
            and values.get("type", "text").lower() not in ("submit", "button", "reset")
        ):
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._inside:
            self._inside = False
            self._done = True


async def _follow(
    client: httpx.AsyncClient,
    response: httpx.Response,
    record: dict[str, Any],
    scope: ClickScope,
) -> httpx.Response | None:
    """Follow *response*'s redirects with GETs, checking each hop against *scope* first;
    the final response, or None when a hop was refused or there were too many."""
    for _ in range(MAX_HOPS):
        location = response.headers.get("location")
        if not response.is_redirect or not location:
            return response
        url = urljoin(str(response.url), location)
        if _refuse(record, url, scope):
            return None
        response = await client.get(url)
        record["steps"].append({"method": "GET", "url": url, "status": response.status_code})
        record["status"] = response.status_code
    if response.is_redirect:
        record["error"] = (
            f"more than {MAX_HOPS} redirects; last to {response.headers.get('location')!r}"
        )
        return None
    return response


async def _open_link(url: str, record: dict[str, Any], scope: ClickScope) -> None:
    if _refuse(record, url, scope):
        return
    # Redirects are followed by _follow, hop by hop, so that every hop is checked.
    async with httpx.AsyncClient(follow_redirects=False, timeout=10.0) as client:
        first = await client.get(url)
        record["steps"].append({"method": "GET", "url": url, "status": first.status_code})
        record["status"] = first.status_code
        response = await _follow(client, first, record, scope)
        if response is None:
            return
        if not response.is_success:
            record["error"] = f"the link answered HTTP {response.status_code}"
            return
        form = _Form()
        if "html" in response.headers.get("content-type", ""):
            form.feed(response.text)
            form.close()
        if form.action is None:
            record["ok"] = True  # the page itself is the unsubscription
            return
        target = urljoin(str(response.url), form.action)
        if _refuse(record, target, scope):
            return
        posted = await client.post(target, data=form.fields)
        record["steps"].append({"method": "POST", "url": target, "status": posted.status_code})
        record["status"] = posted.status_code
        confirmed = await _follow(client, posted, record, scope)
        if confirmed is None:
            return
        if confirmed.is_success:
            record["ok"] = True
        else:
            record["error"] = f"the confirm form answered HTTP {confirmed.status_code}"


async def _scan(urls: list[str], record: dict[str, Any], scope: ClickScope) -> None:
    """GET each of *urls* as a link scanner does: redirects followed (each hop checked against
    *scope*), pages read, nothing submitted. ``ok`` once any fetch got an answer; a URL outside
    the scope is skipped (and ``refused`` says why), the others are still fetched."""
    async with httpx.AsyncClient(
        follow_redirects=False, timeout=10.0, headers={"User-Agent": SCANNER_AGENT}
    ) as client:
        for url in urls:
            if _refuse(record, url, scope):
                continue
            try:
                response = await client.get(url)
                record["steps"].append(
                    {"method": "GET", "url": url, "status": response.status_code}
                )
                record["status"] = response.status_code
                record["ok"] = True
                # What a scanner does with the page (reads it) matters not: only that it submits
                # nothing. Redirects, though, lead to the page that might unsubscribe on GET.
                await _follow(client, response, record, scope)
            except httpx.HTTPError as exc:  # one link failing does not stop the scan
                record["error"] = f"GET {url}: {type(exc).__name__}: {exc}"


async def _send_mailto(
    uri: str, recipient: str, intake: Submission, record: dict[str, Any]
) -> None:
    parts = urlsplit(uri)
    address = unquote(parts.path)
    query = {k.lower(): v[0] for k, v in parse_qs(parts.query).items()}
    message = EmailMessage()
    message["From"] = recipient
    message["To"] = address
    message["Subject"] = query.get("subject", "unsubscribe")
    message.set_content(query.get("body", "unsubscribe") + "\n")
    client = intake.client("recipient.invalid")
    try:
        await client.connect()
        await client.mail(recipient)
        await client.rcpt(address)
        response = await client.data(message.as_bytes())
        await client.quit()
    except aiosmtplib.SMTPResponseException as exc:
        record["error"] = f"the mail was refused: {exc.code} {exc.message}"
        return
    finally:
        client.close()
    record["status"] = response.code
    record["steps"].append(
        {"method": "SMTP", "url": f"{intake.host}:{intake.port}", "status": response.code}
    )
    record["ok"] = True
