"""The fake CleverTap's OpenAPI document: the control API (FastAPI's) plus the callback endpoints.

The callback endpoints are not FastAPI routes (they are served before FastAPI's routing: see
:mod:`harness.clevertap.app`), so FastAPI does not list them. :func:`callback_paths` writes their
OpenAPI path items by hand, from the same pydantic models the schema export uses
(:mod:`harness.clevertap.models`): request bodies for the legacy and v2 formats, and the answers
the server gives (``docs/server.md``). :meth:`CleverTapApp.openapi` merges them into FastAPI's
document, so ``/docs``, ``/redoc`` and ``/openapi.json`` show every endpoint the server answers.

Swagger UI and ReDoc load their scripts from the server itself (``/static/docs``), not from a
CDN, so ``/docs`` works offline: the assets come from the ``fastapi-offline`` package, which
ships them with their licences.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.staticfiles import StaticFiles

from harness.clevertap.inspect import Endpoint
from harness.clevertap.models import LegacyPayload, V2Payload
from harness.vocab import MAX_V2_EVENTS

__all__ = [
    "DOCS_ASSETS",
    "CallbackError",
    "LegacyAccepted",
    "StrayPath",
    "V2Accepted",
    "callback_paths",
    "docs_assets",
    "mount_docs",
]

DOCS_ASSETS = "/static/docs"
"""Where the server serves Swagger UI's and ReDoc's files."""


class LegacyAccepted(BaseModel):
    status: Literal["success"] = "success"
    accepted: int = Field(description="Events in the payload (CleverTap documents no body).")


class V2Accepted(BaseModel):
    status: Literal["success"] = "success"
    message: Literal["Callback processed successfully"] = "Callback processed successfully"


class CallbackError(BaseModel):
    """Every error answer of a callback endpoint; the fields beyond `message` depend on it."""

    status: Literal["error"] = "error"
    message: str = Field(
        description="For a v2 400, one of CleverTap's documented messages: `More than allowed "
        "events were sent`, `Mandatory parameter missing`, `invalid payload`."
    )
    violations: list[dict[str, Any]] | None = Field(
        None, description="400 (strict mode): the error-level check violations, see checks.md."
    )
    limit: int | None = Field(None, description="413: the size cap in bytes.")
    size: int | None = Field(None, description="413: the body's size in bytes.")
    retry_after: int | None = Field(None, description="503 (journal failure): seconds.")


class StrayPath(BaseModel):
    """The 404 of a request for a path that is no callback endpoint (it is journaled)."""

    status: Literal["error"] = "error"
    message: str
    path: str
    did_you_mean: str | None = Field(description="The nearest callback path, if one is close.")
    callback_paths: dict[str, str] = Field(description="Endpoint name: callback path.")


_LEGACY_EXAMPLE = [{"event": "hardbounce", "data": [{"e": "gone@example.com", "ts": 1735689600}]}]
_UNSUBSCRIBE_EXAMPLE = [
    {"event": "unsubscribe", "data": [{"e": "bye@example.com", "ts": 1735689600}]}
]
_V2_EXAMPLE = {
    "version": "v2",
    "events": {
        "failed": [
            {
                "type": "hard_bounce",
                "email": "gone@example.com",
                "meta": "1735689600|campaign-7|",
                "description": "550 5.1.1 user unknown",
            }
        ]
    },
}

_SUMMARIES: dict[Endpoint, tuple[str, type[BaseModel], Any, type[BaseModel]]] = {
    Endpoint.BOUNCE: ("Legacy bounce callback", LegacyPayload, _LEGACY_EXAMPLE, LegacyAccepted),
    Endpoint.UNSUBSCRIBE: (
        "Legacy unsubscribe callback",
        LegacyPayload,
        _UNSUBSCRIBE_EXAMPLE,
        LegacyAccepted,
    ),
    Endpoint.V2: ("SMTP callback v2", V2Payload, _V2_EXAMPLE, V2Accepted),
}

_DESCRIPTION = (
    "Served on the server's fast path, not by FastAPI (so `Try it out` hits the real endpoint). "
    "Every request is checked (docs/checks.md), journaled (`GET {control}/callbacks`) and "
    "answered; strict mode answers 400 to a payload with error-level violations, lenient mode "
    "200. Any other method gets 405 (journaled too); a path that is no callback endpoint gets "
    "404 with the nearest callback path (`StrayPath`, journaled too). Fault rules "
    "(`PUT {control}/faults`) may answer another status, delay, or drop the connection."
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def callback_paths(
    paths: dict[Endpoint, str], control_prefix: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI path items of the callback endpoints at *paths*, and the component schemas
    they refer to (the payload models and the answers)."""
    models: list[type[BaseModel]] = [
        LegacyPayload,
        V2Payload,
        LegacyAccepted,
        V2Accepted,
        CallbackError,
        StrayPath,
    ]
    _, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    items: dict[str, Any] = {}
    for endpoint, path in paths.items():
        summary, payload, example, accepted = _SUMMARIES[endpoint]
        limit = f" At most {MAX_V2_EVENTS} events per call." if endpoint is Endpoint.V2 else ""
        items[path] = {
            "post": {
                "tags": ["callbacks"],
                "summary": summary,
                "operationId": f"callback_{endpoint.value}",
                "description": _DESCRIPTION.format(control=control_prefix) + limit,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(payload), "example": example}},
                },
                "responses": {
                    "200": _json(accepted, "Accepted (journaled; counts for `wait`)."),
                    "400": _json(CallbackError, "Strict mode: error-level violations."),
                    "405": _json(CallbackError, "Not a POST (journaled)."),
                    "413": _json(CallbackError, "Body over the size cap (journaled truncated)."),
                    "503": _json(
                        CallbackError,
                        "The journal could not record the request (Retry-After), or a fault.",
                    ),
                },
            }
        }
    return items, schemas


def docs_assets() -> Path:
    """The directory holding ``swagger-ui-bundle.js``, ``swagger-ui.css``,
    ``redoc.standalone.js`` and ``favicon.png`` (shipped by ``fastapi-offline``)."""
    return Path(str(files("fastapi_offline") / "static"))


def mount_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at *docs_url* and ReDoc at *redoc_url* from local assets.

    FastAPI's own pages load their scripts (and ReDoc its fonts) from CDNs; create the app with
    ``docs_url=None, redoc_url=None`` and call this instead.
    """
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets()), name="docs-static")

    @app.get(docs_url, include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return _local_only(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title}: API",
                swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                # No badge fetched from the online validator.
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _local_only(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title}: API",
                redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )


_LOCAL_ONLY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; font-src 'self' data:"
)
"""The docs pages' Content-Security-Policy: the browser fetches nothing from elsewhere (ReDoc's
bundle links its logo from a CDN; the page runs the same without it). Inline scripts and
styles stay allowed: both UIs are started by an inline script and style themselves inline."""


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["content-security-policy"] = _LOCAL_ONLY
    return page
