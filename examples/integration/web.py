"""The unsubscribe pages: RFC 8058 one-click POST, and a confirm page for people."""

from __future__ import annotations

import email
import email.policy
import html
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from core import Gateway

__all__ = ["make_app"]

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body>
<p>Stop sending email to <strong>{address}</strong>?</p>
<form method="post" action="/u/{token}">
<input type="hidden" name="confirm" value="yes">
<button type="submit">Unsubscribe</button>
</form>
</body></html>
"""
_DONE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Unsubscribed</title></head>
<body><p>{address} is unsubscribed.</p></body></html>
"""


def _not_found() -> Response:
    return HTMLResponse("<p>Unknown or expired unsubscribe link.</p>", status_code=404)


def _is_one_click(content_type: str, body: bytes) -> bool:
    """Does the body carry RFC 8058's ``List-Unsubscribe=One-Click`` (urlencoded or multipart)?"""
    if content_type.split(";")[0].strip().lower() == "multipart/form-data":
        # The email package parses MIME multipart; a form body is one with an outer header.
        message = email.message_from_bytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body,
            policy=email.policy.HTTP,
        )
        return any(
            part.get_param("name", header="content-disposition") == "List-Unsubscribe"
            and str(part.get_payload()).strip() == "One-Click"
            for part in message.walk()
            if not part.is_multipart()
        )
    fields = parse_qs(body.decode("latin-1"))
    return fields.get("List-Unsubscribe") == ["One-Click"]


def make_app(gateway: Gateway) -> Starlette:
    async def page(request: Request) -> Response:
        # A GET never unsubscribes: link scanners and mail previewers fetch every URL.
        token = request.path_params["token"]
        delivery = gateway.lookup(token)
        if delivery is None:
            return _not_found()
        # BUG(unsubscribe_on_get): "the user opened the link, so they want out".
        if gateway.settings.bug == "unsubscribe_on_get":
            gateway.unsubscribe(token, "link")
        return HTMLResponse(
            _PAGE.format(address=html.escape(delivery.recipient), token=html.escape(token))
        )

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        body = await request.body()
        via = (
            "one-click" if _is_one_click(request.headers.get("content-type", ""), body) else "form"
        )
        delivery = gateway.lookup(token)
        if delivery is None or gateway.unsubscribe(token, via) is None:
            return _not_found()
        # 200 with a page, never a redirect: RFC 8058 clients do not follow them.
        return HTMLResponse(_DONE.format(address=html.escape(delivery.recipient)))

    return Starlette(
        routes=[
            Route("/u/{token}", page, methods=["GET"]),
            Route("/u/{token}", unsubscribe, methods=["POST"]),
        ]
    )
