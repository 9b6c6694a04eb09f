"""Address syntax, as the payload checks judge it: RFC 5321 / RFC 6531, IDN domains, no DNS.

The one address policy of the harness: the callback checks and the scenario loader both ask
:func:`address_problem` and :func:`domain_problem`, so a scenario can name every address a
callback may carry (``"a b"@example.com``, ``用户@bücher.de``) and nothing the checks refuse.

The callback checks ask about the same few addresses over and over (one campaign, many events),
so the verdict is cached. Parsing is email-validator's; this module only fixes its options:

- ``check_deliverability=False``: the harness runs on loopback, and a callback about an address
  whose domain has no MX is still a well-formed callback.
- SMTPUTF8 (internationalised local parts) and IDN domains are valid, as CleverTap sends to them.
- quoted local parts and domain literals (``"a b"@[192.0.2.1]``) are valid RFC 5321 syntax.
- ``strict=True``: a local part over 64 octets is refused, as RFC 5321 section 4.5.3.1.1 says.
- ``test_environment=True``: ``.test`` domains (RFC 2606) are what scenarios use, so they are
  accepted; other special-use names (``.invalid``, ``.local``, ``localhost``) are not.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

__all__ = ["address_problem", "domain_problem"]

# The fast path. A campaign reports many distinct addresses at a handful of domains, and a full
# email-validator run costs 25-50 us per address, most of it spent on the domain (IDNA, special-use
# names). So the domain is judged once per domain, and a local part made only of the plainest
# dot-atom characters is judged by this pattern. Anything else (quoted, SMTPUTF8, other atext
# characters, near the length limits) takes the full validator. The pattern is a strict subset of
# what email-validator accepts; a property test keeps the two in agreement.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
_MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1
_MAX_ADDRESS = 254  # RFC 3696 errata / email-validator's limit


def address_problem(address: str) -> str | None:
    """Why *address* is not a valid address, in email-validator's words; None when it is valid.

    The callback hot path calls this for every event. Plain addresses take the fast path (a
    pattern and a per-domain cache); only the others are cached one by one, so that a million
    distinct plain addresses do not fill a cache the garbage collector has to walk.
    """
    local, at, domain = address.rpartition("@")
    if (
        at
        and len(local) <= _MAX_LOCAL
        and len(address) <= _MAX_ADDRESS
        # Letters and digits only (most local parts) need no pattern: the same answer, cheaper.
        and ((local.isascii() and local.isalnum()) or _PLAIN_LOCAL.fullmatch(local))
        and _domain_problem(domain) is None
    ):
        return None
    return _full_problem(address)


@lru_cache(maxsize=4096)
def domain_problem(domain: str) -> str | None:
    """Why *domain* cannot be the domain of an address (email-validator's words); None when it
    can. Asked once per domain, with a plain local part."""
    if "@" in domain:
        return f"a domain has no @ (seen {domain!r})"
    return _full_problem("postmaster@" + domain)


_domain_problem = domain_problem  # the hot path's name for it


@lru_cache(maxsize=4096)
def _full_problem(address: str) -> str | None:
    try:
        validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            allow_domain_literal=True,
            test_environment=True,
            # strict: enforce RFC 5321's 64-octet local part, which is the only thing it adds.
            strict=True,
        )
    except EmailNotValidError as exc:
        return str(exc)
    return None
