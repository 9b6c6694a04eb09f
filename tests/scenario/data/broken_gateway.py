"""The bundled example integration with one door left open, for the runner's own tests.

``python broken_gateway.py BUG`` runs ``examples/integration/gateway.py`` unchanged except for:

- ``unsubscribe_on_get``: the unsubscribe page unsubscribes on GET (what link scanners trip);
- ``any_password``: submission AUTH accepts any user name and password;
- ``open_submission``: submission takes mail without AUTH (AUTH is still offered);
- ``plaintext_mx``: not a bug but a choice the contract allows: no STARTTLS to MX hosts, even
  when offered (the example uses it when offered).

The example's own ``--bug`` variants are its author's; these patch it from outside so that the
runner's tests do not depend on which variants the example ships.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "integration"
sys.path.insert(0, str(EXAMPLE))

import gateway  # noqa: E402
import listeners  # noqa: E402
import web  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402


def _unsubscribe_on_get() -> None:
    make_app = web.make_app

    def broken(gw: Any) -> Any:
        app = make_app(gw)
        page = next(r for r in app.routes if isinstance(r, Route) and "GET" in (r.methods or ()))
        shown = page.endpoint

        async def unsubscribing_page(request: Request) -> Response:
            gw.unsubscribe(request.path_params["token"], "get")
            response: Response = await shown(request)
            return response

        app.router.routes[app.routes.index(page)] = Route(
            page.path, unsubscribing_page, methods=["GET"]
        )
        return app

    gateway.make_app = broken


def _any_password() -> None:
    listeners.hmac = SimpleNamespace(compare_digest=lambda a, b: True)  # type: ignore[assignment]


def _open_submission() -> None:
    # The submission listener's server class (aiosmtpd's SMTP with a quicker address reading).
    class Open(listeners._SMTP):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["auth_required"] = False
            super().__init__(*args, **kwargs)

    listeners._SMTP = Open  # type: ignore[misc]


def _plaintext_mx() -> None:
    import aiosmtplib
    import relay

    class Plain(aiosmtplib.SMTP):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("start_tls") is None:  # None: "when offered", i.e. to MX hosts
                kwargs["start_tls"] = False
            super().__init__(*args, **kwargs)

    relay.aiosmtplib = SimpleNamespace(**{**vars(aiosmtplib), "SMTP": Plain})


BUGS = {
    "unsubscribe_on_get": _unsubscribe_on_get,
    "any_password": _any_password,
    "open_submission": _open_submission,
    "plaintext_mx": _plaintext_mx,
}

if __name__ == "__main__":
    BUGS[sys.argv[1]]()
    sys.exit(gateway.main([]))
