"""MailWorld: several fake MX hosts and an optional relay, one journal, one clock.

The world is what a scenario or a test sets up: hosts serving domains, maybe a relay
(smarthost) taking every domain, all journaling into the same :class:`~harness.journal.Journal`.
It tells the integration under test where everything listens with :meth:`MailWorld.transport_map`
(JSON-able) or :meth:`MailWorld.postfix_transport_map` (a Postfix ``transport_maps`` file).

Two ways to run it, same object:

- in a running event loop: ``async with world:`` (or ``await world.start()`` /
  ``await world.stop()``);
- from sync code: ``with world:`` runs it in a background thread with its own loop
  (:class:`harness._loop.LoopThread`).

:meth:`MailWorld.down` / :meth:`MailWorld.up` switch a host's server-down variant in either mode.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from harness._loop import Lifecycle, LoopThread
from harness.errors import ConfigError, ServerError, UnknownNameError
from harness.journal import Journal, MemoryJournal
from harness.smtp.rules import Rules
from harness.smtp.server import Intake, MXHost

__all__ = ["MailWorld"]


class MailWorld(Lifecycle):
    """Fake MX hosts and an optional relay sharing one journal and one clock.

    >>> world = MailWorld()
    >>> rules = {"full@example.com": "mailbox_full"}
    >>> _ = world.add_host("mx1", domains=["example.com"], rules=rules)
    >>> with world:
    ...     sorted(world.transport_map())
    ['example.com']
    """

    def __init__(
        self,
        *,
        journal: Journal | None = None,
        bounce_intake: Intake | None = None,
        clock: Callable[[], float] = time.monotonic,
        start_timeout: float = 10.0,
    ) -> None:
        self.journal = journal if journal is not None else MemoryJournal()
        self.clock = clock
        self.start_timeout = start_timeout
        self._bounce_intake = bounce_intake
        self.hosts: dict[str, MXHost] = {}
        self._relay: str | None = None
        self._thread: LoopThread | None = None
        self._thread_name = "harness-mail-world"
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- building ----------------------------------------------------------------------------

    def add_host(
        self,
        name: str,
        *,
        domains: list[str] | tuple[str, ...],
        rules: Rules | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> MXHost:
        """Add an MX host serving *domains*; *options* are :class:`MXHost`'s."""
        if not domains:
            raise ConfigError(f"host {name!r}: give at least one domain (or use add_relay)")
        taken = {d: h.name for h in self.hosts.values() for d in h.domains}
        for domain in domains:
            owner = taken.get(domain.lower())
            if owner is not None:
                raise ConfigError(
                    f"host {name!r}: domain {domain!r} is served by {owner!r} already"
                )
        return self._add(MXHost(name, domains=domains, rules=rules, **self._common(options)))

    def add_relay(
        self,
        name: str = "relay",
        *,
        rules: Rules | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> MXHost:
        """Add the relay (smarthost): one listener taking every domain."""
        if self._relay is not None:
            raise ConfigError(f"this world has a relay already ({self._relay!r})")
        host = self._add(MXHost(name, relay=True, rules=rules, **self._common(options)))
        self._relay = name
        return host

    def _common(self, options: dict[str, Any]) -> dict[str, Any]:
        options.setdefault("journal", self.journal)
        options.setdefault("clock", self.clock)
        options.setdefault("bounce_intake", self._bounce_intake)
        return options

    def _add(self, host: MXHost) -> MXHost:
        if host.name in self.hosts:
            raise ConfigError(f"a host called {host.name!r} exists already")
        if self.running:
            raise ServerError(f"add host {host.name!r} before starting the world")
        self.hosts[host.name] = host
        return host

    def host(self, name: str) -> MXHost:
        """The host called *name* (:class:`UnknownNameError` with a suggestion otherwise)."""
        try:
            return self.hosts[name]
        except KeyError:
            raise UnknownNameError("host", name, self.hosts) from None

    @property
    def relay(self) -> MXHost | None:
        return self.hosts[self._relay] if self._relay else None

    @property
    def bounce_intake(self) -> Intake | None:
        return self._bounce_intake

    @bounce_intake.setter
    def bounce_intake(self, intake: Intake | None) -> None:
        """Where accept-then-bounce DSNs go; may be set after start (the intake may start later)."""
        self._bounce_intake = intake
        for host in self.hosts.values():
            host.bounce_intake = intake

    @property
    def running(self) -> bool:
        return self._loop is not None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> MailWorld:
        """Start every host in the running loop."""
        if self._loop is not None:
            raise ServerError("the mail world is already running")
        self._loop = asyncio.get_running_loop()
        try:
            for host in self.hosts.values():
                await host.start()
        except BaseException:
            await self._stop_hosts()
            self._loop = None
            raise
        return self

    async def stop(self) -> None:
        """Stop every host; open sessions end and are journaled as ``server_stopped``."""
        if self._loop is None:
            return
        try:
            await self._stop_hosts()
        finally:
            self._loop = None

    async def _stop_hosts(self) -> None:
        errors: list[BaseException] = []
        for host in self.hosts.values():
            try:
                await host.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise ServerError(f"{len(errors)} hosts failed to stop cleanly") from errors[0]

    def _start_deadline(self) -> float:
        return self.start_timeout

    def _stop_deadline(self) -> float:
        return self.start_timeout

    # -- control -----------------------------------------------------------------------------

    def down(self, name: str, variant: str, *, delay: float | None = None) -> None:
        """Make host *name* play the server-down *variant* (journaled); its port is kept."""
        host = self.host(name)
        self._control(lambda: host.down(variant, delay=delay), host)

    def up(self, name: str) -> None:
        """Bring host *name* back, on the same port (journaled)."""
        host = self.host(name)
        self._control(host.up, host)

    def _control(self, action: Callable[[], None], host: MXHost) -> None:
        if self._thread is not None:
            self._thread.run(_switch(action, host), timeout=self.start_timeout)
            return
        loop = self._loop
        if loop is None:
            raise ServerError("the mail world is not running; start it first")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            raise ServerError("call down()/up() from the event loop the world was started in")
        # In the world's own loop the switch is synchronous; a listener coming back after
        # ``refused`` finishes starting in a task, and connections queue in the backlog until then.
        action()
        task = loop.create_task(host.settled())
        task.add_done_callback(_report_failure)

    def reset(self) -> None:
        """Forget the rules' attempt counters and windows on every host (between tests)."""
        for host in self.hosts.values():
            host.reset()

    @property
    def drifted(self) -> list[str]:
        """Names of the hosts that :meth:`down` / :meth:`up` left other than configured."""
        return [name for name, host in self.hosts.items() if host.drifted]

    def restore(self) -> None:
        """Put every host taken down or brought up at run time back as configured."""
        for name in self.drifted:
            host = self.hosts[name]
            self._control(host.restore, host)

    # -- export ------------------------------------------------------------------------------

    def transport_map(self) -> dict[str, str]:
        """Domain -> ``"127.0.0.1:port"``; the relay, if any, under ``"*"`` (everything else)."""
        result: dict[str, str] = {}
        for host in self.hosts.values():
            target = f"{host.bind}:{host.port}"
            if host.relay:
                continue
            for domain in host.domains:
                result[domain] = target
        relay = self.relay
        if relay is not None:
            result["*"] = f"{relay.bind}:{relay.port}"
        return result

    def transport_map_json(self) -> str:
        """:meth:`transport_map` as JSON text."""
        return json.dumps(self.transport_map(), indent=2, sort_keys=True)

    def postfix_transport_map(self) -> str:
        """A Postfix ``transport_maps`` file: ``example.com smtp:[127.0.0.1]:2525`` per line.

        Brackets stop Postfix from looking up MX records for the address; ``*`` (the relay)
        matches every other domain (transport(5)).
        """
        lines = []
        for domain, target in self.transport_map().items():
            address, _, port = target.rpartition(":")
            lines.append(f"{domain} smtp:[{address}]:{port}")
        return "\n".join(lines) + "\n"


async def _switch(action: Callable[[], None], host: MXHost) -> None:
    action()
    await host.settled()


def _report_failure(task: asyncio.Task[Any]) -> None:
    # Retrieve the exception so asyncio does not log "exception was never retrieved"; the host
    # itself raises it again from stop() through settled().
    if not task.cancelled():
        task.exception()
