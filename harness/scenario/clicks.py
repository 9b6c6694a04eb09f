"""The unsubscribe clicker: plays a recipient who unsubscribes from the message they received.

A click waits until the recipient's message reached its fake mail server (the
:data:`~harness.journal.Kind.SMTP_MESSAGE` entry), waits the click's ``after``, then reads what
the integration put in that message:

- ``one_click``: RFC 8058. Needs an HTTPS/HTTP URI in ``List-Unsubscribe`` (RFC 2369) *and*
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; a mail client offers one-click only
  with both. POSTs ``List-Unsubscribe=One-Click`` form-encoded, without cookies, and does not
  follow redirects (RFC 8058 section 3.2).
- ``get``: opens the link (``List-Unsubscribe`` URI, else the first link in the body) as a
  person would: follows redirects and, when the page is a form that posts back, submits it
  (the confirm button), since a GET alone must not unsubscribe (link scanners fetch URLs).
- ``mailto``: mails the ``mailto:`` address of ``List-Unsubscribe`` (with its ``subject`` and
  ``body`` if given) through the integration's bounce intake, else its submission port.

Each click is journaled as one :data:`~harness.journal.Kind.CLICK` entry::

    {"recipient", "via", "url", "status": int | None, "ok": bool, "error": str | None,
     "message_seq": int | None, "steps": [{"method", "url", "status"}, ...]}
"""

from __future__ import annotations

import asyncio
import re
import time
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import aiosmtplib
import httpx

from harness.journal import Entry, Journal, Kind
from harness.records import SmtpMessage, record_from_json
from harness.scenario.campaign import Submission
from harness.scenario.model import Click

__all__ = ["list_unsubscribe_uris", "perform_click"]

_URI = re.compile(r"<\s*([^>]*?)\s*>")
_BODY_LINK = re.compile(r"https?://[^\s<>\"')]+")
ONE_CLICK = "List-Unsubscribe=One-Click"


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
) -> Entry:
    """Perform *click* once its message arrived (waiting until *deadline*, a ``time.time()``);
    journal and return the CLICK entry. Never raises for what the integration does wrong."""
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
        await _act(click, message.data, record, intake)
    except (httpx.HTTPError, aiosmtplib.SMTPException, OSError) as exc:
        record["ok"] = False
        record["error"] = f"{type(exc).__name__}: {exc}"
    return journal.append(record_from_json(Kind.CLICK, record))


async def _act(
    click: Click, data: SmtpMessage, record: dict[str, Any], intake: Submission | None
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
        await _one_click(http, record)
    elif click.via == "get":
        url = http or _body_link(data.body)
        if url is None:
            record["error"] = _missing("an http(s) link in List-Unsubscribe or the body", data)
            return
        record["url"] = url
        await _open_link(url, record)
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


async def _one_click(url: str, record: dict[str, Any]) -> None:
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


async def _open_link(url: str, record: dict[str, Any]) -> None:
    async with httpx.AsyncClient(follow_redirects=True, timeout=10.0) as client:
        response = await client.get(url)
        record["steps"].append({"method": "GET", "url": url, "status": response.status_code})
        record["status"] = response.status_code
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
        confirmed = await client.post(target, data=form.fields)
        record["steps"].append({"method": "POST", "url": target, "status": confirmed.status_code})
        record["status"] = confirmed.status_code
        if confirmed.is_success:
            record["ok"] = True
        else:
            record["error"] = f"the confirm form answered HTTP {confirmed.status_code}"


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
