"""The gateway's state and decisions: queue, relay with retries, bounces, DSNs, unsubscribes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from callbacks import Event, Reporter
from classify import Verdict, classify_dsn_failure, classify_status, enhanced_status, reply_code
from dsn import AutoReply, Complaint, RecipientBlock, Report, explanation_for, read_mail, unfold
from relay import Attempt, Relay, route
from settings import Settings

__all__ = [
    "Delivery",
    "Gateway",
    "decode_verp",
    "encode_verp",
    "unquote_local",
    "with_unsubscribe_headers",
]

log = logging.getLogger("gateway")

MAX_PARALLEL_DELIVERIES = 50
"""Outbound SMTP sessions at once; a big campaign queues behind them instead of opening
thousands of sockets."""

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_REPLACED_HEADERS = {b"list-unsubscribe", b"list-unsubscribe-post"}
_META = re.compile(rb"^X-CleverTap_META:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


@dataclass(slots=True)
class Delivery:
    """One recipient's copy of one submitted message."""

    queue_id: str
    recipient: str
    meta: str
    token: str
    queued_at: int
    """Epoch second the copy was queued (submission accepted)."""
    reported: set[str] = field(default_factory=set)
    """What was already reported for this copy ("bounce", "delivered"): each goes out once."""


def new_token() -> str:
    # Base32 in lower case: the token also travels in a mailto local part, and some MTAs fold
    # the case of local parts; 120 random bits.
    return base64.b32encode(secrets.token_bytes(15)).decode("ascii").lower()


# RFC 5321 4.1.2 Dot-string: atext (RFC 5322 3.2.3, UTF-8 too with SMTPUTF8) between dots.
# Any other local part travels as a Quoted-string.
_ATEXT = r"[^\x00-\x20\x7f()<>\[\]:;@\\,.\"]+"
_DOT_STRING = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_QUOTED_PAIR = re.compile(r"\\(.)")


def unquote_local(local: str) -> str:
    """A local part as its mailbox reads it: ``"john doe"`` -> ``john doe``."""
    if len(local) >= 2 and local[0] == local[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", local[1:-1])
    return local


def quote_local(local: str) -> str:
    """A local part as SMTP writes it: quoted unless it is a plain Dot-string."""
    if _DOT_STRING.fullmatch(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_key(address: str) -> str:
    """One key per mailbox however the address was written (``"jane.doe"@Example.com`` and
    ``jane.doe@example.com`` are the same mailbox, RFC 5321 4.1.2), for finding a copy by what
    a DSN names."""
    local, _, domain = address.rpartition("@")
    return f"{quote_local(unquote_local(local))}@{domain}".lower()


def encode_verp(recipient: str, domain: str) -> str:
    """``user@example.com`` -> ``bounces+user=example.com@sut.test``; a recipient whose local
    part had to be quoted (``"john doe"@example.com``) gets a quoted VERP address
    (``"bounces+john doe=example.com"@sut.test``): a quote in the middle of a local part is no
    address at all, and a client library refuses to send it."""
    local, _, rcpt_domain = recipient.rpartition("@")
    return f"{quote_local(f'bounces+{unquote_local(local)}={rcpt_domain}')}@{domain}"


def decode_verp(address: str) -> str | None:
    """``bounces+user=example.com@sut.test`` -> ``user@example.com``; None if not VERP."""
    local = unquote_local(address.rpartition("@")[0])
    prefix, plus, encoded = local.partition("+")
    if prefix.lower() != "bounces" or not plus:
        return None
    # The recipient's own local part may contain "=" or "+"; a domain never contains "=".
    user, equals, domain = encoded.rpartition("=")
    if not equals or not user or not domain:
        return None
    return f"{quote_local(user)}@{domain}"


def with_unsubscribe_headers(raw: bytes, url: str, mailto: str, *, one_click: bool = True) -> bytes:
    """Prepend RFC 2369 / RFC 8058 headers, replacing any the message already had.

    The rest of the message stays byte for byte as submitted (X-CleverTap_META included): it is
    prepended to, never re-serialised.
    """
    added = f"List-Unsubscribe: <{url}>, <mailto:{mailto}>\r\n".encode("ascii")
    if one_click:
        added += b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    match = _HEADER_END.search(raw)
    if match is None:
        head, rest = raw, b""
    else:
        cut = match.start() + (2 if match.group().startswith(b"\r") else 1)
        head, rest = raw[:cut], raw[cut:]
    if b"list-unsubscribe" not in head.lower():
        return added + raw  # nothing to replace: most messages, and no need to read their lines
    kept: list[bytes] = []
    skipping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # continuation of a folded header
            if not skipping:
                kept.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() in _REPLACED_HEADERS
        if not skipping:
            kept.append(line)
    return added + b"".join(kept) + rest


def clevertap_meta(raw: bytes) -> str | None:
    """The X-CleverTap_META value exactly as submitted, only unfolded (what the email package's
    compat32 policy gives), found without parsing every header: a campaign submits thousands
    of messages, and this is all the gateway reads of them."""
    match = _HEADER_END.search(raw)
    found = _META.search(raw, 0, match.start() if match else len(raw))
    if found is None:
        return None
    return unfold(found.group(1).decode("ascii", "replace"))


class Gateway:
    """Everything the listeners call into. One instance per process, used from one event loop."""

    def __init__(self, settings: Settings, reporter: Reporter) -> None:
        self.settings = settings
        self.reporter = reporter
        self.http_base = ""
        """``http://host:port`` of the unsubscribe pages, set once the HTTP listener is bound."""
        self._by_recipient: dict[str, list[Delivery]] = {}
        self._by_token: dict[str, Delivery] = {}
        self._unsubscribed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_PARALLEL_DELIVERIES)
        self._relay = Relay(settings)
        self._last_meta = ""
        """The meta of the message submitted last; only the stale_meta bug reads it."""

    # -- submission --------------------------------------------------------------------------

    def accept(self, mail_from: str, recipients: Sequence[str], raw: bytes) -> str:
        """Queue one submitted message for each recipient; returns the queue id."""
        queue_id = secrets.token_hex(6)
        meta = clevertap_meta(raw)
        if meta is None:
            log.warning(
                "%s: queued without an X-CleverTap_META header; v2 meta will be empty", queue_id
            )
        # The INFO line of each copy is its outcome (relayed, bounced), after the queue id as
        # Postfix writes it: one line per message in a campaign.
        log.debug("%s: queued from %s for %d recipient(s)", queue_id, mail_from, len(recipients))
        self._last_meta = meta or ""
        for recipient in recipients:
            delivery = Delivery(queue_id, recipient, meta or "", new_token(), int(time.time()))
            self._by_recipient.setdefault(mailbox_key(recipient), []).append(delivery)
            self._by_token[delivery.token] = delivery
            message = with_unsubscribe_headers(
                raw,
                f"{self.http_base}/u/{delivery.token}",
                f"unsubscribe+{delivery.token}@{self.settings.domain}",
                # BUG(no_one_click_header): RFC 2369's header only, RFC 8058's forgotten.
                one_click=self.settings.bug != "no_one_click_header",
            )
            task = asyncio.create_task(self._deliver(delivery, message), name=recipient)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            # BUG(delivered_on_queue): "queued" taken for "delivered".
            if self.settings.bug == "delivered_on_queue":
                self._delivered(delivery, "queued")
        return queue_id

    def _meta(self, delivery: Delivery) -> str:
        # BUG(stale_meta): one variable for every message's meta, overwritten by each submission.
        if self.settings.bug == "stale_meta":
            return self._last_meta
        return delivery.meta

    async def _deliver(self, delivery: Delivery, message: bytes) -> None:
        rcpt = delivery.recipient
        sender = encode_verp(rcpt, self.settings.domain)
        delays = self.settings.retry_delays
        # BUG(no_smtp_retry): the first 4xx is taken as final.
        if self.settings.bug == "no_smtp_retry":
            delays = ()
        for attempt_no in range(len(delays) + 1):
            target = route(self.settings, rcpt)
            if target is None:
                # Never resolve real DNS: a domain outside HARNESS_MX_MAP does not exist.
                domain = rcpt.rpartition("@")[2]
                outcome = Attempt(Verdict.HARD, f"550 5.1.2 no such domain: {domain}")
            else:
                async with self._slots:
                    outcome = await self._relay.attempt(target, sender, rcpt, message)
            if outcome.verdict is not Verdict.TEMPORARY:
                break
            # BUG(report_each_deferral): a deferral is reported as it happens, retry or not.
            if self.settings.bug == "report_each_deferral" and attempt_no < len(delays):
                self._bounce(delivery, Verdict.SOFT, outcome.description, int(time.time()), 1)
            if attempt_no < len(delays):
                log.info(
                    "%s: deferred %s (attempt %d): %s; retry in %g s",
                    delivery.queue_id,
                    rcpt,
                    attempt_no + 1,
                    outcome.description,
                    delays[attempt_no],
                )
                await asyncio.sleep(delays[attempt_no])
        where = f"{target[0]}:{target[1]}" if target else "nowhere"
        if outcome.verdict is Verdict.DELIVERED:
            log.info(
                "%s: relayed %s via %s: %s", delivery.queue_id, rcpt, where, outcome.description
            )
            self._delivered(delivery, outcome.description)
            return
        verdict = Verdict.SOFT if outcome.verdict is Verdict.TEMPORARY else outcome.verdict
        # BUG(down_is_hard): no server answered (or it refused in its greeting): "it does not
        # exist", hard.
        if self.settings.bug == "down_is_hard" and reply_code(outcome.description) in (None, 421):
            verdict = Verdict.HARD
        self._bounce(delivery, verdict, outcome.description, int(time.time()), attempt_no + 1)

    # -- outcomes ----------------------------------------------------------------------------

    def _delivered(self, delivery: Delivery, description: str) -> None:
        legacy_too = self.settings.bug == "legacy_delivered"
        if "delivered" in delivery.reported or (
            self.settings.callback_format != "v2" and not legacy_too
        ):
            return  # legacy has no delivered event
        delivery.reported.add("delivered")
        self.reporter.report(
            Event(
                "delivered", delivery.recipient, int(time.time()), self._meta(delivery), description
            )
        )

    def _bounce(
        self, delivery: Delivery, verdict: Verdict, description: str, ts: int, attempts: int
    ) -> None:
        if "bounce" in delivery.reported:
            log.info("bounce for %s already reported; not again", delivery.recipient)
            return
        delivery.reported.add("bounce")
        soft = verdict is Verdict.SOFT
        # BUG(swapped_classes): soft reported as hard, hard as soft.
        if self.settings.bug == "swapped_classes":
            soft = not soft
        kind = "softbounce" if soft else "hardbounce"
        log.info(
            "%s: bounced %s %s after %d attempt(s): %s",
            delivery.queue_id,
            delivery.recipient,
            "soft" if verdict is Verdict.SOFT else "hard",
            attempts,
            description,
        )
        self.reporter.report(Event(kind, delivery.recipient, ts, self._meta(delivery), description))

    # -- bounce intake -----------------------------------------------------------------------

    def handle_dsn(self, envelope_recipient: str, raw: bytes) -> None:
        """Act on mail that arrived for *envelope_recipient* (a VERP address, normally)."""
        observed = int(time.time())
        mail = read_mail(raw)
        # VERP names the recipient we sent to, whatever aliasing happened on the way; the
        # addresses inside the mail are only the fallback for the plain bounce address.
        verp = decode_verp(envelope_recipient)
        # BUG(auto_reply_as_bounce): whatever comes back to the bounce address is a bounce.
        if isinstance(mail, AutoReply) and self.settings.bug == "auto_reply_as_bounce" and verp:
            delivery = self._find(verp, None, "bounce")
            if delivery is not None:
                self._bounce(delivery, Verdict.HARD, f"auto-reply: {mail.subject}", observed, 1)
            return
        if isinstance(mail, AutoReply):
            log.info(
                "intake: automatic reply from %s (%r) to %s: not a bounce; ignored",
                mail.sender,
                mail.subject,
                envelope_recipient,
            )
            return
        if isinstance(mail, Complaint):
            # BUG(complaint_ignored): "not a bounce, so not our business".
            if self.settings.bug == "complaint_ignored":
                log.info("intake: feedback report about %s; ignored", verp or mail.recipient)
                return
            self._complaint(verp or mail.recipient, mail)
            return
        if mail is None:
            log.warning(
                "intake: mail to %s is not a delivery status report; ignored", envelope_recipient
            )
            return
        if not mail.blocks:
            log.warning(
                "intake: delivery report to %s names no recipient; ignored", envelope_recipient
            )
            return
        for block in mail.blocks:
            address = verp or block.final_recipient or block.original_recipient
            if address is None:
                log.warning("intake: DSN block without any recipient ignored: %s", block)
                continue
            self._dsn_block(address, block, mail, observed)

    def _dsn_block(
        self, address: str, block: RecipientBlock, report: Report, observed: int
    ) -> None:
        failed = block.action == "failed"
        # BUG(success_dsn_as_bounce): a DSN is a bounce; its Action is never read.
        if self.settings.bug == "success_dsn_as_bounce":
            failed = True
        # BUG(delayed_as_bounce): "not delivered yet" read as "not delivered".
        if self.settings.bug == "delayed_as_bounce" and block.action == "delayed":
            failed = True
        category = "bounce" if failed else "delivered"
        delivery = self._find(address, report.meta, category)
        if delivery is None:
            log.warning(
                "intake: DSN (%s %s) for %s matches no unreported message; ignored",
                block.action or "no Action",
                block.status,
                address,
            )
            return
        # BUG(alias_reported): the DSN's own idea of who failed wins.
        if self.settings.bug == "alias_reported" and block.final_recipient:
            delivery = dataclasses.replace(delivery, recipient=block.final_recipient)
        diagnostic = block.diagnostic
        if diagnostic is None and report.text:
            # Exim says why only in its text when no server ever answered ("retry timeout
            # exceeded": the message expired), with a bare Status 5.0.0 in the report.
            diagnostic = explanation_for(report.text, block.final_recipient or address)
        description = diagnostic or f"{block.action} {block.status or ''}".strip()
        if failed:
            verdict = classify_dsn_failure(block.status, diagnostic)
            # BUG(exim_status_only): the Status field alone; Exim's is 5.0.0 for every failure.
            if self.settings.bug == "exim_status_only":
                verdict = classify_status(enhanced_status(block.status) or "5.0.0")
            ts = observed
            # BUG(dsn_send_time_ts): the time the message went out, not when the DSN came back.
            if self.settings.bug == "dsn_send_time_ts":
                ts = delivery.queued_at
            self._bounce(delivery, verdict, f"DSN: {description}", ts, 1)
        elif block.action == "delayed":
            log.info("intake: delivery to %s delayed (%s); not a bounce yet", address, description)
        elif block.action in ("delivered", "relayed", "expanded"):
            log.info("intake: DSN says %s %s", block.action, address)
            self._delivered(delivery, f"DSN: {description}")
        else:
            log.warning(
                "intake: DSN block with unknown Action %r for %s ignored", block.action, address
            )

    def _complaint(self, address: str | None, complaint: Complaint) -> None:
        """A feedback report: the recipient marked our mail as spam. CleverTap unsubscribes
        such users: an unsubscribe in legacy, a ``spam`` event in v2 (once per address)."""
        if complaint.feedback_type == "not-spam":
            log.info("intake: feedback report says %s is not spam; nothing to do", address)
            return
        if address is None:
            log.warning("intake: feedback report names no recipient; ignored")
            return
        candidates = self._by_recipient.get(mailbox_key(address), [])
        if not candidates:
            log.warning("intake: complaint about %s, never sent to; ignored", address)
            return
        delivery = next((d for d in candidates if d.meta == complaint.meta), candidates[-1])
        key = delivery.recipient.lower()
        if key in self._unsubscribed:
            log.info("complaint from %s: already unsubscribed, not reported", key)
            return
        self._unsubscribed.add(key)
        log.info("complaint (%s) from %s: unsubscribed", complaint.feedback_type, key)
        self.reporter.report(
            Event(
                "spam",
                delivery.recipient,
                int(time.time()),
                self._meta(delivery),
                f"complaint: feedback report ({complaint.feedback_type})",
            )
        )

    def _find(self, address: str, meta: str | None, category: str) -> Delivery | None:
        """The copy a DSN is about: the returned META picks it, else the latest unreported."""
        candidates = [
            d
            for d in self._by_recipient.get(mailbox_key(address), [])
            if category not in d.reported
        ]
        if meta is not None:
            for delivery in candidates:
                if delivery.meta == meta:
                    return delivery
        return candidates[-1] if candidates else None

    # -- unsubscribes ------------------------------------------------------------------------

    def lookup(self, token: str) -> Delivery | None:
        return self._by_token.get(token.lower())

    def unsubscribe(self, token: str, via: str) -> bool | None:
        """True: unsubscribed now; False: already was (no second callback); None: bad token."""
        delivery = self.lookup(token)
        if delivery is None:
            return None
        key = delivery.recipient.lower()
        # BUG(double_unsubscribe): the "already unsubscribed" check is missing.
        if key in self._unsubscribed and self.settings.bug != "double_unsubscribe":
            log.info("unsubscribe %s again via %s: already done, not reported", key, via)
            return False
        self._unsubscribed.add(key)
        log.info("unsubscribed %s via %s", delivery.recipient, via)
        self.reporter.report(
            Event(
                "unsubscribe",
                delivery.recipient,
                int(time.time()),
                self._meta(delivery),
                f"unsubscribed via {via}",
            )
        )
        return True

    # -- shutdown ----------------------------------------------------------------------------

    async def abandon_deliveries(self) -> None:
        """Cancel deliveries still in flight (waiting to retry); each is logged, none silently.
        Then QUIT the outbound connections still cached."""
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.error(
                "shutdown: %d delivery(ies) abandoned before a final outcome (not reported): %s",
                len(pending),
                ", ".join(sorted(t.get_name() for t in pending)),
            )
        await self._relay.close()
