"""Address syntax, as the payload checks judge it: RFC 5321 / RFC 6531, IDN domains, no DNS.

The callback checks ask about the same few addresses over and over (one campaign, many events),
so the verdict is cached. Parsing is email-validator's; this module only fixes its options:

- ``check_deliverability=False``: the harness runs on loopback, and a callback about an address
  whose domain has no MX is still a well-formed callback.
- SMTPUTF8 (internationalised local parts) and IDN domains are valid, as CleverTap sends to them.
- quoted local parts and domain literals (``"a b"@[192.0.2.1]``) are valid RFC 5321 syntax.
- ``test_environment=True``: ``.test`` domains (RFC 2606) are what scenarios use, so they are
  accepted; other special-use names (``.invalid``, ``.local``, ``localhost``) are not.
"""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

__all__ = ["address_problem"]


@lru_cache(maxsize=65536)
def address_problem(address: str) -> str | None:
    """Why *address* is not a valid address, in email-validator's words; None when it is valid.

    Cached: the callback hot path calls this for every event.
    """
    try:
        validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            allow_domain_literal=True,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        return str(exc)
    return None
