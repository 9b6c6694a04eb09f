"""A private Postfix instance for the real-MTA suite: its own config, queue, log and port.

Never the system instance: everything lives in a fresh directory passed to ``postfix -c DIR``
(an absolute path), with ``inet_interfaces = 127.0.0.1`` and a short retry schedule so that
deferral, retry and expiry happen in seconds. What worked on these machines, and the gotchas, are
in ``shared/reference/real-mtas.md`` and ``field-facts.md``.

Postfix cannot bind port 0, so a free port is picked and, should another process take it
before Postfix binds it, the instance is started again on another one (``start`` retries).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = ["POSTFIX", "Delivery", "PrivatePostfix", "postfix_missing", "wait_until"]

T = TypeVar("T")

POSTFIX = shutil.which("postfix") or (
    "/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None
)


def postfix_missing() -> str | None:
    """Why the real-MTA suite cannot run here, or None when it can."""
    if POSTFIX is None:
        return (
            "Postfix is not installed (no `postfix` on PATH nor /usr/sbin/postfix); install the "
            "Debian package `postfix` (.ci/run does) to run the real-MTA suite"
        )
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root (its daemons drop to `postfix`)"
    try:
        import pwd

        pwd.getpwnam("postfix")
    except KeyError:
        return "the `postfix` user is missing: the Postfix package is not fully installed"
    return None


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, step: float = 0.2) -> T:
    """Poll *probe* until it returns something other than None; fail naming *what*."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(step)


# Short timers: a deferral is retried within seconds and a message expires in half a minute,
# so that the whole life of a soft failure (deferred, delay warning, expired) fits in a test run.
TIMERS: Mapping[str, str] = {
    "queue_run_delay": "2s",
    "minimal_backoff_time": "2s",
    "maximal_backoff_time": "4s",
    "maximal_queue_lifetime": "24s",
    "bounce_queue_lifetime": "24s",
    "delay_warning_time": "6s",
    "smtp_connect_timeout": "4s",
    "smtp_helo_timeout": "4s",
}


_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file = {log}
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.harness.test
mydomain = harness.test
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtputf8_enable = yes
smtpd_peername_lookup = no
# As MX hosts mostly are (and the fake MX is): no mail before HELO/EHLO.
smtpd_helo_required = yes
# Errors answered at once: the suite compares replies, not Postfix's tarpitting of bad clients.
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 100
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
# Opportunistic TLS to the next hop, as Debian's stock main.cf and most relays have it.
smtp_tls_security_level = may
transport_maps = texthash:{transport}
message_size_limit = {size_limit}
"""

# chroot = n everywhere: the chroot jail would need copies of /etc files and the transport map.
_MASTER_CF = """\
{port_line}
{port_line_noutf8}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# One delivery-agent log line: "QID: to=<rcpt>, relay=..., dsn=4.2.2, status=deferred (text)".
_DELIVERY = re.compile(
    r"postfix/(?P<agent>[\w-]+)\[\d+\]: (?P<qid>[0-9A-F]+): to=<(?P<rcpt>[^>]*)>,"
    r".*?dsn=(?P<dsn>\d\.\d+\.\d+), status=(?P<status>\w+) \((?P<text>.*)\)$"
)
# "QID: from=<sender>, status=expired, returned to sender" (qmgr, when the lifetime runs out).
_EXPIRED = re.compile(r"postfix/qmgr\[\d+\]: (?P<qid>[0-9A-F]+): from=<[^>]*>, status=expired")
_QUEUED = re.compile(r"postfix/smtpd\[\d+\]: (?P<qid>[0-9A-F]+): client=")
_MESSAGE_ID = re.compile(r"postfix/cleanup\[\d+\]: (?P<qid>[0-9A-F]+): message-id=(?P<mid>\S*)")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One line of Postfix's log about one recipient: an attempt or the end of its life."""

    qid: str
    recipient: str
    status: str
    """``sent``, ``deferred``, ``bounced`` or ``expired`` (the last from qmgr)."""
    dsn: str | None
    text: str


class PrivatePostfix:
    """One private Postfix: ``start()``, ``submit``-side port, the log read back, ``stop()``."""

    def __init__(
        self,
        transport_map: str,
        *,
        size_limit: int = 10 * 1024 * 1024,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="harness-postfix-"))
        # Postfix daemons run as `postfix` and must reach the queue and the map.
        self.root.chmod(0o755)
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.log = self.root / "maillog"
        self.transport = self.config / "transport"
        self.size_limit = size_limit
        self.extra = dict(extra or {})
        self.port = 0
        self.port_noutf8 = 0
        self._transport_text = transport_map
        self._qids: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, attempts: int = 5) -> PrivatePostfix:
        from harness.smtp.tls import make_certificate

        for path in (self.config, self.queue, self.data):
            path.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data, "postfix", "postfix")
        cert, key = make_certificate(("postfix.harness.test", "localhost")).write(self.config)
        self.transport.write_text(self._transport_text)
        last = ""
        for _ in range(attempts):
            self.port, self.port_noutf8 = _free_port(), _free_port()
            main = _MAIN_CF.format(
                queue=self.queue,
                data=self.data,
                log=self.log,
                root=self.root,
                cert=cert,
                key=key,
                transport=self.transport,
                size_limit=self.size_limit,
            )
            main += "".join(f"{k} = {v}\n" for k, v in {**TIMERS, **self.extra}.items())
            (self.config / "main.cf").write_text(main)
            (self.config / "master.cf").write_text(
                _MASTER_CF.format(
                    port_line=f"127.0.0.1:{self.port} inet n - n - - smtpd",
                    # A second listener like a host without SMTPUTF8, for reply comparisons.
                    port_line_noutf8=f"127.0.0.1:{self.port_noutf8} inet n - n - - smtpd"
                    " -o smtputf8_enable=no",
                )
            )
            result = self._postfix("start")
            if result.returncode != 0:
                raise RuntimeError(f"postfix -c {self.config} start failed: {result.stdout}")
            try:
                wait_until(f"Postfix to listen on {self.port}", self._listening, timeout=15)
                return self
            except TimeoutError:
                last = self.log.read_text() if self.log.exists() else "(no log)"
                self._postfix("stop")
                self._wait_stopped()
        raise RuntimeError(f"Postfix never listened after {attempts} tries; its log:\n{last}")

    def _listening(self) -> bool | None:
        for port in (self.port, self.port_noutf8):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return None
        return True

    def stop(self) -> None:
        self._postfix("stop")
        self._wait_stopped()

    def _wait_stopped(self) -> None:
        def stopped() -> bool | None:
            return True if self._postfix("status").returncode != 0 else None

        wait_until("Postfix to stop", stopped, timeout=20)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        if POSTFIX is None:  # pragma: no cover - the suite skips first
            raise RuntimeError("postfix is not installed")
        return subprocess.run(
            [POSTFIX, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def flush(self) -> None:
        """Retry every deferred message now (``postfix flush``)."""
        self._postfix("flush")

    def reload(self) -> None:
        """Re-read the configuration and maps (``postfix reload``)."""
        result = self._postfix("reload")
        if result.returncode != 0:
            raise RuntimeError(f"postfix reload failed: {result.stdout}{result.stderr}")

    # -- the log -----------------------------------------------------------------------------

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def deliveries(self) -> list[Delivery]:
        """Every delivery-agent result and expiry in the log, in order."""
        by_qid: dict[str, str] = {}
        found: list[Delivery] = []
        for line in self.log_lines():
            match = _DELIVERY.search(line)
            if match:
                by_qid.setdefault(match["qid"], match["rcpt"])
                found.append(
                    Delivery(
                        match["qid"], match["rcpt"], match["status"], match["dsn"], match["text"]
                    )
                )
                continue
            match = _EXPIRED.search(line)
            if match:
                found.append(
                    Delivery(match["qid"], by_qid.get(match["qid"], ""), "expired", None, "")
                )
        return found

    def history(self, recipient: str) -> list[Delivery]:
        """The log lines about *recipient*, attempts first, expiry last."""
        qids = {d.qid for d in self.deliveries() if d.recipient == recipient}
        return [d for d in self.deliveries() if d.qid in qids]

    def queue_id(self, message_id: str) -> str | None:
        """The queue id cleanup logged for the message whose Message-ID is *message_id*."""
        for line in self.log_lines():
            match = _MESSAGE_ID.search(line)
            if match and match["mid"] == message_id:
                return match["qid"]
        return None

    def errors(self) -> Iterator[str]:
        """Fatal, panic and error lines: a misconfigured instance says so here."""
        for line in self.log_lines():
            if re.search(r"\]: (fatal|panic|error):", line):
                yield line


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
