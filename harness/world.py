"""The World: every fake server of a test run (mail world + fake CleverTap) on one journal.

::

    world = World.from_scenario(load_scenario("scenarios/mailbox-full.yaml"))
    with world:                          # sync code: one background event loop for everything
        env = world.sut_env()            # tell the integration under test where things are
        ...
        world.expect_callback("softbounce", "full@example.com")

    async with World() as world:          # inside a running event loop (async tests, the runner)
        ...

The world owns no integration: the runner (:mod:`harness.scenario.runner`) or the user starts
one and gives it :meth:`World.sut_env`. The integration's bounce intake is only known once it is
ready, so :attr:`World.bounce_intake` may be set after the world started.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from harness._loop import Lifecycle, LoopThread
from harness.clevertap.server import CleverTapServer
from harness.clevertap.settings import ServerSettings
from harness.errors import ConfigError, ServerError
from harness.expect import JournalAssertions
from harness.journal import Journal, MemoryJournal
from harness.smtp.server import Intake, MXHost
from harness.smtp.world import MailWorld

if TYPE_CHECKING:
    from harness.scenario.model import HostPlan, Scenario

__all__ = ["World"]

CallbackFormat = Literal["legacy", "v2"]

_TLS = {"none": (None, False), "starttls": ("starttls", False), "required": ("starttls", True)}


class World(Lifecycle, JournalAssertions):
    """The fake mail world and the fake CleverTap, sharing one :class:`~harness.journal.Journal`.

    *mail* defaults to an empty :class:`~harness.smtp.world.MailWorld`; *clevertap* is a
    :class:`~harness.clevertap.server.CleverTapServer` or its settings (default settings when
    None). Both must journal into *journal* (a new in-memory one when None).
    *callback_format* is what :meth:`sut_env` tells the integration to send.
    """

    def __init__(
        self,
        *,
        journal: Journal | None = None,
        mail: MailWorld | None = None,
        clevertap: CleverTapServer | ServerSettings | None = None,
        callback_format: CallbackFormat = "legacy",
        start_timeout: float = 10.0,
    ) -> None:
        if callback_format not in ("legacy", "v2"):
            raise ConfigError(f"callback_format must be 'legacy' or 'v2', not {callback_format!r}")
        if journal is None:
            journal = mail.journal if mail is not None else MemoryJournal()
        if mail is not None and mail.journal is not journal:
            raise ConfigError("World(mail=...): the mail world must journal into the same journal")
        if isinstance(clevertap, CleverTapServer):
            if clevertap.journal is not journal:
                raise ConfigError(
                    "World(clevertap=...): the server must journal into the same journal; "
                    "pass CleverTapServer(settings, journal=journal), or pass the settings"
                )
            server = clevertap
        else:
            server = CleverTapServer(clevertap, journal=journal)
        self.journal: Journal = journal
        self.mail: MailWorld = mail if mail is not None else MailWorld(journal=journal)
        self.clevertap: CleverTapServer = server
        # The control API takes this world's hosts down and up (docs/server.md).
        server.app.mail = self.mail
        self.callback_format: CallbackFormat = callback_format
        self.start_timeout = start_timeout
        self._thread: LoopThread | None = None
        self._thread_name = "harness-world"
        self._started = False

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario,
        *,
        journal: Journal | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> World:
        """The world a scenario describes: its MX hosts and relay, its fake CleverTap.

        *settings* override the fake CleverTap's :class:`ServerSettings` fields (host, port,
        token, ...) on top of what the scenario says.
        """
        journal = journal if journal is not None else MemoryJournal()
        mail = MailWorld(journal=journal)
        for plan in scenario.hosts():
            _add_host(mail, plan)
        world = cls(
            journal=journal,
            mail=mail,
            clevertap=scenario.clevertap.server_settings(**(settings or {})),
            callback_format=scenario.clevertap.format,
        )
        # The dashboard's report page judges this scenario on the journal (docs/dashboard.md).
        world.clevertap.app.scenario = scenario
        return world

    # -- lifecycle (async) -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._started

    async def start(self) -> World:
        """Start every server in the running event loop."""
        if self._started:
            raise ServerError("the world is already running")
        await self.clevertap.start()
        try:
            await self.mail.start()
        except BaseException:
            await self.clevertap.stop()
            raise
        self._started = True
        return self

    async def stop(self) -> None:
        """Stop every server (mail first: a DSN in flight still finds its intake journaled)."""
        if not self._started:
            return
        self._started = False
        try:
            await self.mail.stop()
        finally:
            await self.clevertap.stop()

    # -- lifecycle (sync): harness._loop.Lifecycle --------------------------------------------

    def _start_deadline(self) -> float:
        return self.start_timeout

    def _stop_deadline(self) -> float:
        # The fake CleverTap may wait up to its stop_timeout for requests in flight.
        return self.clevertap.settings.stop_timeout + 10.0

    # -- wiring ----------------------------------------------------------------------------------

    @property
    def bounce_intake(self) -> Intake | None:
        """Where accept-then-bounce DSNs go: the integration's intake ``(host, port)``."""
        return self.mail.bounce_intake

    @bounce_intake.setter
    def bounce_intake(self, intake: Intake | None) -> None:
        # Settable after start: the integration starts after the world and reports its intake
        # port only when ready. DSNs are scheduled after a message is accepted, so setting it
        # before the campaign is submitted is early enough.
        self.mail.bounce_intake = intake

    def sut_env(self) -> dict[str, str]:
        """The ``HARNESS_*`` variables of docs/integration-contract.md that describe the world.

        The mail side (``HARNESS_MX_MAP`` and/or ``HARNESS_RELAY`` with its credentials and TLS),
        the callback side (format and URLs) and ``HARNESS_HOST``. What only the runner knows (the
        ready file, submission credentials and TLS) is not here.
        """
        if not self._started:
            raise ServerError("start the world first: its ports are known once it runs")
        urls = self.clevertap.urls
        env = {
            "HARNESS_HOST": "127.0.0.1",
            "HARNESS_CALLBACK_FORMAT": self.callback_format,
            "HARNESS_BOUNCE_URL": urls.bounce,
            "HARNESS_UNSUBSCRIBE_URL": urls.unsubscribe,
            "HARNESS_V2_URL": urls.v2,
        }
        mx_map = {k: v for k, v in self.mail.transport_map().items() if k != "*"}
        if mx_map:
            env["HARNESS_MX_MAP"] = json.dumps(mx_map, sort_keys=True, separators=(",", ":"))
        relay = self.mail.relay
        if relay is not None:
            env["HARNESS_RELAY"] = f"{relay.bind}:{relay.port}"
            env["HARNESS_RELAY_TLS"] = relay.tls or "none"
            if relay.auth_users:
                user, password = next(iter(relay.auth_users.items()))
                env["HARNESS_RELAY_USER"] = user
                env["HARNESS_RELAY_PASSWORD"] = password
        return env

    def down(self, host: str, variant: str, *, delay: float | None = None) -> None:
        """Make MX host *host* play the server-down *variant* from now on (same port)."""
        self._in_loop(lambda: self.mail.down(host, variant, delay=delay))

    def up(self, host: str) -> None:
        """Bring MX host *host* back, on the same port."""
        self._in_loop(lambda: self.mail.up(host))

    def reset(self, *, journal: bool = True) -> None:
        """Forget everything recorded and counted: the journal (unless *journal* is False, for
        a journal file that keeps a whole run), the duplicate index, the fault counters and the
        mail rules' per-(sender, recipient) attempts; hosts taken down or brought up at run
        time are put back as configured. Servers keep running."""
        self.clevertap.reset(journal=journal)
        self.mail.reset()
        # Cheap check first: a reset runs before every test, a drifted host is rare.
        if self.mail.drifted:
            self._in_loop(self.mail.restore)

    def _in_loop(self, action: Callable[[], None]) -> None:
        """Run *action* in the loop the servers live in (host switches must happen there)."""
        if not self._started:
            raise ServerError("the world is not running; start it first")
        thread = self._thread
        if thread is None:
            action()  # async mode: MailWorld checks that this is the world's running loop
            return

        async def call() -> None:
            action()

        thread.run(call(), timeout=self.start_timeout)


def _add_host(mail: MailWorld, plan: HostPlan) -> MXHost:
    declared = plan.host
    options: dict[str, Any] = {"rules": plan.parsed_rules()}
    if declared.flavour is not None:
        options["flavour"] = declared.flavour
    if declared.tls == "implicit":
        options["tls"] = "implicit"
    else:
        options["tls"], options["require_tls"] = _TLS[declared.tls]
    if declared.auth is not None:
        options["auth"] = {declared.auth.username: declared.auth.password}
        options["auth_required"] = True
    if declared.server_down is not None:
        options["server_down"] = declared.server_down
    options.update(declared.server_options())
    if plan.role == "relay":
        return mail.add_relay("relay", **options)
    # Named after its first domain: the journal's "host" field then reads like the scenario.
    return mail.add_host(
        plan.domains[0], domains=plan.domains, hostname=f"mx.{plan.domains[0]}", **options
    )
