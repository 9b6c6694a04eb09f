"""Submission probes: after the campaign, the runner knocks on the integration's submission port
with bad credentials, as anybody on the network could, and journals what it answered.

The probes (``integration.submission_probes``; names in :data:`harness.vocab.SUBMISSION_PROBES`):

- ``wrong_password``: AUTH as the right user with a wrong password;
- ``wrong_user``: AUTH as a user the integration was not given, with the right password;
- ``no_auth``: no AUTH at all.

Each connects as the campaign did (implicit TLS or STARTTLS when the scenario's
``integration.tls`` says so), tries AUTH (except ``no_auth``), then ``MAIL FROM`` and ``RCPT TO``
for the campaign's first recipient, and stops before DATA: even an integration that accepts
everything relays nothing, so the rest of the run is unchanged. The contract (section 3.1) wants
``535`` to the bad AUTH and ``530`` to mail without AUTH. A probe is *accepted* when AUTH answered
2xx or a recipient was accepted without valid credentials; the cross-check CT601 fails the run
for it (:mod:`harness.scenario.crosschecks`).

Each probe is journaled as one :class:`harness.records.SubmissionProbe` record.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import aiosmtplib

from harness.journal import Entry, Journal
from harness.records import SubmissionProbe
from harness.scenario.campaign import Submission

__all__ = ["probe_notes", "probe_submission", "run_probes"]


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}".strip()


async def probe_submission(
    probe: str, submission: Submission, journal: Journal, *, sender: str, recipient: str
) -> Entry:
    """Try one *probe* against *submission* (whose ``auth`` holds the real credentials) and
    journal its :class:`SubmissionProbe`. Never raises for what the integration does."""
    real = submission.auth
    username: str | None = None
    password: str | None = None
    # A fresh random suffix: no integration can have been configured with it.
    wrong = f"wrong-{secrets.token_hex(4)}"
    if probe == "wrong_password":
        if real is None:
            raise ValueError("the wrong_password probe needs the real credentials")
        username, password = real.username, f"{real.password}-{wrong}"
    elif probe == "wrong_user":
        if real is None:
            raise ValueError("the wrong_user probe needs the real credentials")
        username, password = f"{real.username}-{wrong}", real.password
    elif probe != "no_auth":
        raise ValueError(f"unknown submission probe {probe!r}")
    steps: list[str] = []
    fields: dict[str, object] = {}
    client = aiosmtplib.SMTP(
        hostname=submission.host,
        port=submission.port,
        timeout=submission.timeout,
        use_tls=submission.tls == "implicit",
        start_tls=submission.tls == "starttls",
        validate_certs=submission.tls_context is not None,
        tls_context=submission.tls_context,
        local_hostname="harness-probe.invalid",
    )
    try:
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            fields = {"stage": "connect", "error": f"{type(exc).__name__}: {exc}"}
            return _journal(journal, probe, username, steps, fields)
        fields = await _converse(client, username, password, sender, recipient, steps)
    except (aiosmtplib.SMTPException, OSError) as exc:
        fields = {**fields, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
    return _journal(journal, probe, username, steps, fields)


async def _converse(
    client: aiosmtplib.SMTP,
    username: str | None,
    password: str | None,
    sender: str,
    recipient: str,
    steps: list[str],
) -> dict[str, object]:
    """AUTH (when given a user), MAIL, RCPT; the fields of the record. A refused AUTH is the
    decisive refusal, but MAIL and RCPT are still tried: an integration that answers 535 and
    then takes the mail anyway accepts any password all the same."""
    refused: dict[str, object] = {}
    if username is not None and password is not None:
        try:
            response = await client.login(username, password)
        except aiosmtplib.SMTPResponseException as exc:
            steps.append(f"AUTH -> {_reply(exc)}")
            refused = {"stage": "auth", "reply": _reply(exc), "auth_reply": _reply(exc)}
        except aiosmtplib.SMTPException as exc:  # AUTH not offered, no common mechanism
            steps.append(f"AUTH -> not possible: {exc}")
            refused = {"stage": "auth", "reply": f"not possible: {exc}"}
            refused["auth_reply"] = refused["reply"]
        else:
            reply = f"{response.code} {response.message}".strip()
            steps.append(f"AUTH -> {reply}")
            return {"accepted": True, "stage": "auth", "reply": reply, "auth_reply": reply}
    utf8 = not (sender.isascii() and recipient.isascii())
    encoding = "utf-8" if utf8 else "ascii"
    options = ["SMTPUTF8"] if utf8 and client.supports_extension("smtputf8") else None
    try:
        response = await client.mail(sender, options=options, encoding=encoding)
    except aiosmtplib.SMTPResponseException as exc:
        steps.append(f"MAIL FROM:<{sender}> -> {_reply(exc)}")
        return refused or {"stage": "mail", "reply": _reply(exc)}
    steps.append(f"MAIL FROM:<{sender}> -> {response.code} {response.message}".strip())
    try:
        response = await client.rcpt(recipient, encoding=encoding)
    except aiosmtplib.SMTPResponseException as exc:
        steps.append(f"RCPT TO:<{recipient}> -> {_reply(exc)}")
        return refused or {"stage": "rcpt", "reply": _reply(exc)}
    reply = f"{response.code} {response.message}".strip()
    steps.append(f"RCPT TO:<{recipient}> -> {reply}")
    # Accepted: stop before DATA, so that nothing is relayed (QUIT ends the transaction).
    return {"accepted": True, "stage": "rcpt", "reply": reply, "auth_reply": refused.get("reply")}


def _journal(
    journal: Journal,
    probe: str,
    username: str | None,
    steps: list[str],
    fields: dict[str, object],
) -> Entry:
    return journal.append(
        SubmissionProbe(
            probe=probe,
            username=username,
            auth_reply=_text(fields.get("auth_reply")),
            accepted=bool(fields.get("accepted", False)),
            stage=_text(fields.get("stage")),
            reply=_text(fields.get("reply")),
            steps=tuple(steps),
            error=_text(fields.get("error")),
        )
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


async def run_probes(
    probes: Sequence[str],
    submission: Submission,
    journal: Journal,
    *,
    sender: str,
    recipient: str,
) -> list[Entry]:
    """Run *probes* one after the other (each on its own connection); their entries."""
    return [
        await probe_submission(p, submission, journal, sender=sender, recipient=recipient)
        for p in probes
    ]


def probe_notes(entries: Sequence[Entry]) -> list[str]:
    """One line per probe of *entries* that could not finish (it then proves nothing)."""
    return [
        f"the {e.data.probe} submission probe did not finish: {e.data.error}"
        for e in entries
        if isinstance(e.data, SubmissionProbe) and e.data.error and not e.data.accepted
    ]
