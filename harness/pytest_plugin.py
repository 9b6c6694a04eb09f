"""The pytest plugin: the fake world as fixtures, assertions that wait, checks after every test.

Registered through the ``pytest11`` entry point as ``ctharness`` (switch it off with
``-p no:ctharness``). Documented in ``docs/pytest.md``; the short version::

    def test_hardbounce_is_reported(ct_world):
        httpx.post(ct_world.urls.bounce, json=[...])
        ct_world.expect_callback("hardbounce", "gone@example.com", within=5)

How it is built, and why:

- Names: every fixture, marker and ini key starts with ``ct_``, every option with ``--ct-``,
  every environment variable with ``CTHARNESS_`` (the integration contract's ``HARNESS_*``
  variables describe the world to an integration; they are not settings of this plugin).
- The servers are session-scoped (``ct_session_world``: one per pytest process, so one per xdist
  worker, every port 0). A test uses the function-scoped ``ct_world``, which only *resets* the
  session world before the test (journal, duplicate index, fault counters, attempt counters),
  so a test pays well under a millisecond for it.
- After the test body ran (in a ``pytest_runtest_call`` wrapper, so a failure fails the test
  rather than erroring its teardown) the plugin checks what the test left behind: errors logged
  inside the server threads, error-level check violations journaled during the test, and, for
  ``ct_scenario``, the scenario's expectations; for ``ct_mock``, requests that matched no
  callback URL and error-level violations. If the test body already failed, none of
  that is raised: the real error stays the one shown, and server errors are attached to its
  report as a section.
- Settings come from the command line, then the ini file, then ``CTHARNESS_*`` environment
  variables, then defaults; the ``ct_settings`` fixture holds the result and can be overridden
  in a conftest. They are resolved when a test first asks for a fixture of the plugin, so a bad
  value fails only the tests that use the plugin, never an unrelated suite.
- Inside ``@given`` (hypothesis) the world is reset before every example and checked after it,
  through hypothesis's public ``test.hypothesis.inner_test`` hook.

This module stays cheap to import (pytest imports it in every run that has the package
installed): the servers, the checks and the scenario code are imported inside the fixtures.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:
    from harness.checks import Severity, Violation
    from harness.clevertap.faults import FaultRule
    from harness.clevertap.server import CleverTapServer, ServerUrls
    from harness.journal import Entry, Journal, Kind
    from harness.respx_mock import CleverTapMock
    from harness.scenario.judge import Verdict
    from harness.scenario.model import Scenario
    from harness.smtp.world import MailWorld
    from harness.world import World

__all__ = ["HarnessSettings", "ScenarioFixture", "WorldFixture"]

PLUGIN_NAME = "ctharness"
ENV_PREFIX = "CTHARNESS_"

Strictness = Literal["strict", "lenient"]
CallbackFormat = Literal["legacy", "v2"]


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HarnessSettings:
    """What the plugin's session world is built from. Immutable; use :meth:`with_`.

    Resolved once per run from, in order of precedence, the command line
    (``--ct-timeout``), the ini file (``ct_timeout``), the environment (``CTHARNESS_TIMEOUT``) and
    these defaults. Override the ``ct_settings`` fixture to change them from a conftest.
    """

    host: str = "127.0.0.1"
    """Where every fake server listens. Off loopback (an integration in a container), a
    :attr:`token` is required."""
    token: str | None = None
    """Bearer token of the fake CleverTap's control API; required when :attr:`host` is not a
    loopback address."""
    advertise: str | None = None
    """The host name the integration reaches the servers by, in ``sut_env()`` (for example
    ``host.docker.internal``); None: the address they listen on."""
    clevertap_port: int = 0
    """Port of the fake CleverTap; 0 takes a free one (the only sane choice with xdist)."""
    relay_port: int = 0
    """Port of the default accept-all relay; 0 takes a free one."""
    journal: Path | str | None = None
    """An SQLite journal file (kept across tests), or a journal URL (``postgresql://...``, one
    journal shared with other harness processes: docs/scale-out.md); None keeps the journal in
    memory. Under xdist the worker id is appended to a file name (``run-gw0.sqlite``); a URL
    cannot be split per worker, so it is refused under xdist."""
    strictness: Strictness = "strict"
    """strict: payloads with error-level violations are answered 400; lenient: 200."""
    timeout: float = 5.0
    """Default ``within`` of the waiting assertions, in seconds."""
    callback_format: CallbackFormat = "legacy"
    """The callback format ``sut_env()`` tells the integration to send."""

    def with_(self, **changes: Any) -> HarnessSettings:
        """A copy with *changes* applied."""
        return replace(self, **changes)

    def journal_for(self, worker: str | None) -> Path | str | None:
        """The journal of one xdist *worker* (None: not under xdist)."""
        if self.journal is None or worker is None:
            return self.journal
        if isinstance(self.journal, str):
            from harness.errors import ConfigError

            raise ConfigError(
                f"the journal {self.journal.split('@')[-1]!r} is a shared store: xdist workers "
                "would read each other's callbacks in it; run without -n, or give a file"
            )
        return self.journal.with_name(f"{self.journal.stem}-{worker}{self.journal.suffix}")


def _positive_duration(text: str) -> float:
    from harness.durations import parse_duration

    value = parse_duration(text)
    if value <= 0:
        raise ValueError
    return value


def _journal(text: str) -> Path | str:
    from harness.journal import is_journal_url

    return text if is_journal_url(text) else Path(text)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError
        return text

    return parse


@dataclass(frozen=True, slots=True)
class _Option:
    name: str
    """Settings field; the option is ``--ct-<name>``, ini ``ct_<name>``, env
    ``CTHARNESS_<NAME>`` (dashes and underscores as each form wants)."""
    parse: Callable[[str], Any]
    metavar: str
    expected: str
    help: str

    @property
    def flag(self) -> str:
        return "--ct-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "ct_" + self.name

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


_OPTIONS = (
    _Option("host", str, "HOST", "an address", "address every fake server listens on (127.0.0.1)"),
    _Option(
        "token",
        str,
        "TOKEN",
        "a non-empty token",
        "bearer token of the control API; required when --ct-host is not loopback",
    ),
    _Option(
        "advertise",
        str,
        "HOST",
        "a host name",
        "host name sut_env() gives the integration (default: the listening address)",
    ),
    _Option(
        "clevertap_port", _port, "PORT", "a port 0-65535", "port of the fake CleverTap (0: free)"
    ),
    _Option(
        "relay_port", _port, "PORT", "a port 0-65535", "port of the accept-all relay (0: free)"
    ),
    _Option(
        "journal",
        _journal,
        "JOURNAL",
        "a file path or a journal URL",
        "SQLite journal file, or postgresql://... (default: in memory)",
    ),
    _Option(
        "strictness",
        _choice("strict", "lenient"),
        "MODE",
        "strict or lenient",
        "strict: answer 400 to payloads with error-level violations; lenient: 200",
    ),
    _Option(
        "timeout",
        _positive_duration,
        "DURATION",
        'a positive duration (5, "200ms", "2s", "1.5m")',
        "default 'within' of the waiting assertions (5s)",
    ),
    _Option(
        "callback_format",
        _choice("legacy", "v2"),
        "FORMAT",
        "legacy or v2",
        "callback format the integration is told to send (legacy)",
    ),
)


def _resolve_settings(config: pytest.Config) -> HarnessSettings:
    """CLI > ini > env > default; a bad value is a :class:`ConfigError` naming where it came from.

    Called by the ``ct_settings`` fixture, not at configure time: an unrelated test suite in
    the same environment never reads these values, so a bad one must not break it.
    """
    from harness.errors import ConfigError

    values: dict[str, Any] = {}
    for option in _OPTIONS:
        cli = config.getoption(option.flag)
        ini = config.getini(option.ini)
        env = os.environ.get(option.env)
        for source, raw in ((option.flag, cli), (option.ini, ini), (option.env, env)):
            if raw is None or raw == "":
                continue
            try:
                values[option.name] = option.parse(str(raw).strip())
            except ValueError:
                raise ConfigError(
                    f"clevertap-harness: {source} must be {option.expected}, got {raw!r}"
                ) from None
            break
    settings = HarnessSettings(**values)
    # The fake CleverTap's own rules (a token off loopback, ...), checked now rather than when
    # the world starts, and said with this plugin's option names.
    from harness.clevertap.settings import ServerSettings

    try:
        ServerSettings(host=settings.host, token=settings.token)
    except ConfigError as exc:
        raise ConfigError(
            f"clevertap-harness: --ct-host / --ct-token: {exc} (--ct-token, ct_token or "
            "CTHARNESS_TOKEN)"
        ) from None
    return settings


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("clevertap-harness", "clevertap-harness (fake mail world + CleverTap)")
    for option in _OPTIONS:
        group.addoption(
            option.flag,
            default=None,
            metavar=option.metavar,
            help=f"{option.help} [env {option.env}]",
        )
        parser.addini(option.ini, f"clevertap-harness: {option.help}", default=None)
    group.addoption(
        "--ct-hold",
        action="store_true",
        default=False,
        help="when a test using ct_world or ct_scenario fails, keep its world serving as the "
        "test left it and wait for Enter, so that its dashboard can be looked at (like --pdb; "
        "not with xdist)",
    )


_CALL_FIXTURES = pytest.StashKey[list["_Checked"]]()

MARKERS = {
    "ct_scenario": "ct_scenario(path): the scenario file the ct_scenario fixture builds its world "
    "from (relative paths resolve against the test file's directory)",
    "ct_checks": "ct_checks(allow_violations=False, allow=(), check_scenario=True): opt out of "
    "the checks clevertap-harness runs after the test (all violations, some codes, the scenario "
    "verdict)",
    "ct_mock": "ct_mock(base_url=..., strict=None, settings=None, allow=(), "
    "allow_violations=False): arguments of the CleverTapMock the ct_mock fixture gives",
}
"""The plugin's markers (one home: registered from here, listed in docs/pytest.md)."""


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS.values():
        config.addinivalue_line("markers", line)
    if config.getoption("ct_hold", False) and (
        config.getoption("numprocesses", None) or hasattr(config, "workerinput")
    ):
        raise pytest.UsageError(
            "--ct-hold waits for Enter on the terminal, which xdist workers do not have; "
            "run the failing test without -n"
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    # A scenario marker without the fixture that reads it would be silently ignored (a typo'd
    # file never loaded): refuse it. get_closest_marker is a dict lookup per test.
    if item.get_closest_marker("ct_scenario") is not None and "ct_scenario" not in getattr(
        item, "fixturenames", ()
    ):
        pytest.fail(
            f"{item.nodeid}: @pytest.mark.ct_scenario is read only by the ct_scenario fixture, "
            "which this test does not use (ct_world is the plain session world); ask for "
            "ct_scenario instead",
            pytrace=False,
        )


# -- errors inside the servers ---------------------------------------------------------------------

# Where server code reports exceptions it caught: uvicorn ("Exception in ASGI application"),
# aiosmtpd ("SMTP session exception", then it answers 500) and asyncio (a task or callback in
# the world's loop that raised). None of them reaches the test by itself.
_SERVER_LOGGERS = ("uvicorn.error", "mail.log", "asyncio", "harness.smtp", "harness.journal")
_WORLD_THREAD = "harness-world"  # the name World.start_sync gives its LoopThread


class _ErrorTrap(logging.Handler):
    """Collects error records logged by the server threads, to raise them in the right test.

    Only records from the threads of this session's worlds count: the same loggers also serve
    servers that other tests in this process start by themselves, and their errors are theirs.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self._found: list[str] = []
        self._guard = threading.Lock()
        self.threads: set[int] = set()
        self.any_world_thread = False
        """Also count every thread named like a world's loop (for a world started elsewhere)."""
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread in self.threads:
            return True
        return self.any_world_thread and (record.threadName or "").startswith(_WORLD_THREAD)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted is still an error worth showing
            text = f"{record.name}: {record.msg!r}"
        with self._guard:
            self._found.append(text)

    def take(self) -> list[str]:
        with self._guard:
            found, self._found = self._found, []
        return found

    def install(self) -> None:
        for name in _SERVER_LOGGERS:
            logging.getLogger(name).addHandler(self)

    def remove(self) -> None:
        for name in _SERVER_LOGGERS:
            logging.getLogger(name).removeHandler(self)


def _server_errors(trap: _ErrorTrap, journal: Journal, since: int) -> list[str]:
    from harness.journal import Kind

    found = trap.take()
    # The fake CleverTap journals a check that crashed (and answers 500) instead of logging it.
    from harness.records import Callback

    for entry in journal.iter_entries(Kind.CALLBACK, since=since):
        if isinstance(entry.data, Callback) and entry.data.error:
            found.append(f"fake CleverTap, journal seq {entry.seq}: {entry.data.error}")
    return found


def _format_server_errors(errors: list[str], when: str) -> str:
    lines = [f"{len(errors)} error(s) inside the harness servers {when}:"]
    for error in errors:
        lines.extend("  " + line for line in error.splitlines())
    return "\n".join(lines)


# -- the session: one journal, one default world, scenario worlds on demand ------------------------


def _worker(config: pytest.Config) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput["workerid"])


@dataclass(slots=True)
class _Defaults:
    """What a world looked like right after it started, so that a reset can restore it."""

    faults: tuple[FaultRule, ...]
    intake: Any


class _Session:
    """The per-process state of the plugin (a session fixture owns it; no module globals)."""

    def __init__(self, settings: HarnessSettings, worker: str | None) -> None:
        from harness.journal import open_journal

        self.settings = settings
        path = settings.journal_for(worker)
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        # One journal per process: every world of the session appends to it, so it reads as
        # one ordered story of the run, and a journal file gets everything.
        self.journal = open_journal(path)
        self.keep_journal = path is not None
        self.trap = _ErrorTrap()
        self.trap.install()
        self.defaults: dict[int, _Defaults] = {}
        self.scenario_worlds: dict[Path, tuple[Scenario, World]] = {}

    def start(self, world: World) -> None:
        """Start *world* in its own thread and trap the errors logged in that thread."""
        world.start_sync()
        self.remember(world)

    def remember(self, world: World) -> None:
        thread = world.thread
        if thread is not None and thread.ident is not None:
            self.trap.threads.add(thread.ident)
        self.defaults[id(world)] = _Defaults(
            tuple(world.clevertap.faults.rules), world.bounce_intake
        )

    def reset(self, world: World) -> None:
        """Put *world* back as it started; the hot path of every test (target < 1 ms)."""
        defaults = self.defaults.get(id(world))
        if defaults is not None:
            faults = world.clevertap.faults
            if tuple(faults.rules) != defaults.faults:
                faults.set(defaults.faults)
            if world.bounce_intake != defaults.intake:
                world.bounce_intake = defaults.intake
        # A journal file keeps the whole run; tests read only what came after their start.
        world.reset(journal=not (self.keep_journal and world.journal is self.journal))

    def scenario_world(self, path: Path) -> tuple[Scenario, World]:
        """The started world of the scenario at *path*, built once per session."""
        cached = self.scenario_worlds.get(path)
        if cached is None:
            from harness.scenario.loader import load_scenario
            from harness.world import World

            scenario = load_scenario(path)
            world = World.from_scenario(scenario, journal=self.journal)
            self.start(world)
            cached = self.scenario_worlds[path] = (scenario, world)
        return cached

    def close(self) -> None:
        try:
            for _, world in self.scenario_worlds.values():
                world.stop_sync()
        finally:
            self.trap.remove()
            self.journal.close()


def _default_world(settings: HarnessSettings, journal: Journal) -> World:
    """The world ``ct_session_world`` starts: an accept-all relay and the fake CleverTap."""
    from harness.clevertap.settings import ServerSettings
    from harness.smtp.world import MailWorld
    from harness.world import World

    mail = MailWorld(journal=journal)
    mail.add_relay("relay", bind=settings.host, port=settings.relay_port)
    clevertap = ServerSettings(
        host=settings.host,
        port=settings.clevertap_port,
        token=settings.token,
        strict=settings.strictness == "strict",
    )
    return World(
        journal=journal, mail=mail, clevertap=clevertap, callback_format=settings.callback_format
    )


@pytest.fixture(scope="session")
def ct_settings(pytestconfig: pytest.Config) -> HarnessSettings:
    """The resolved settings (CLI > ini > env > default). Override in a conftest to change them.

    A bad value fails the tests that use the plugin's fixtures (each says which setting and
    what it should be), and nothing else.
    """
    from harness.errors import ConfigError

    try:
        return _resolve_settings(pytestconfig)
    except ConfigError as exc:
        problem = str(exc)
    # Failed outside the except block: pytest would otherwise print the message twice ("during
    # handling of the above exception").
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def _ct_session(ct_settings: HarnessSettings, pytestconfig: pytest.Config) -> Iterator[_Session]:
    session = _Session(ct_settings, _worker(pytestconfig))
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def ct_session_world(ct_settings: HarnessSettings, _ct_session: _Session) -> Iterator[World]:
    """The session's world: an accept-all relay and the fake CleverTap, started once.

    Use ``ct_world`` in tests (it resets this world first and checks it after). Override this
    fixture in a conftest to yield another started world (``with World(mail=...) as w: yield
    w``); ``ct_world`` resets and checks whatever world it yields.
    """
    world = _default_world(ct_settings, _ct_session.journal)
    _ct_session.start(world)
    try:
        yield world
    finally:
        world.stop_sync()


# -- what a test holds -----------------------------------------------------------------------------


class _Checked:
    """What the after-test hook (and, inside ``@given``, each example) asks of a fixture: a
    WorldFixture, or the ct_mock check."""

    def _begin(self) -> None:
        """Start afresh: before each hypothesis example."""
        raise NotImplementedError

    def _problem(self) -> str | None:
        """What the test or example left behind; None when all is well."""
        raise NotImplementedError

    def _check(self) -> None:
        """After a test body that passed: fail the test with :meth:`_problem`."""
        problem = self._problem()
        if problem is not None:
            # Outside any except block, so pytest shows no "during handling of the above
            # exception" chain: the message is the whole story.
            pytest.fail(problem, pytrace=False)

    def _attach_errors(self, item: pytest.Item) -> None:
        """After a test body that failed: add what belongs beside its error."""


@dataclass(slots=True)
class _OptOut:
    all_violations: bool = False
    codes: set[str] = field(default_factory=set)
    check_scenario: bool = True


class WorldFixture(_Checked):
    """What ``ct_world`` gives a test: the session world, reset, with waiting assertions.

    Every reader and assertion looks only at journal entries recorded since this test started
    (:attr:`since`); ``within`` defaults to the ``ct_timeout`` setting. Inside ``@given`` the
    world is reset before each example and checked after it.
    """

    def __init__(
        self,
        world: World,
        session: _Session,
        node: pytest.Item,
        *,
        timeout: float,
        advertise: str | None = None,
    ) -> None:
        self.world = world
        self.timeout = timeout
        self._session = session
        self._node = node
        self._advertise = advertise
        self._optout = _OptOut()
        marker = node.get_closest_marker("ct_checks")
        if marker is not None:
            self._apply_marker(marker)
        stray = session.trap.take()
        self.since = 0
        """Sequence number of the last journal entry before this test (or this example)."""
        self.started = 0.0
        self._begin()
        if stray:
            # Logged after the previous test's teardown: nobody has seen them yet, and dropping
            # them would hide a server bug. They fail this test's setup, saying when they came.
            when = "between the previous test's teardown and this test's start"
            pytest.fail(_format_server_errors(stray, when), pytrace=False)

    def _begin(self) -> None:
        """Reset the world and start reading the journal from here (a test, or an example)."""
        self._session.reset(self.world)
        self.since = self.world.journal.last_seq
        self.started = time.time()

    def _apply_marker(self, marker: pytest.Mark) -> None:
        known = {"allow_violations", "allow", "check_scenario"}
        unknown = set(marker.kwargs) - known
        if marker.args or unknown:
            what = f"arguments {marker.args!r}" if marker.args else f"{sorted(unknown)}"
            pytest.fail(
                f"@pytest.mark.ct_checks takes only keyword arguments {sorted(known)}; "
                f"got {what} on {self._node.nodeid}",
                pytrace=False,
            )
        self._optout.all_violations = bool(marker.kwargs.get("allow_violations", False))
        allow = marker.kwargs.get("allow", ())
        self._optout.codes.update([allow] if isinstance(allow, str) else allow)
        self._optout.check_scenario = bool(marker.kwargs.get("check_scenario", True))

    # -- the parts ---------------------------------------------------------------------------

    @property
    def journal(self) -> Journal:
        return self.world.journal

    @property
    def clevertap(self) -> CleverTapServer:
        """The fake CleverTap server (``.urls``, ``.set_faults(...)``, ``.faults``)."""
        return self.world.clevertap

    @property
    def mx(self) -> MailWorld:
        """The mail world (its hosts, ``transport_map()``)."""
        return self.world.mail

    @property
    def urls(self) -> ServerUrls:
        """The fake CleverTap's callback URLs: ``.bounce``, ``.unsubscribe``, ``.v2``."""
        return self.world.clevertap.urls

    def sut_env(self) -> dict[str, str]:
        """The ``HARNESS_*`` variables that tell an integration where this world is.

        With the ``advertise`` setting, every listening address in them is replaced by that
        host name (for an integration in a container that reaches the servers through it).
        """
        env = self.world.sut_env()
        if self._advertise is None:
            return env
        bind = self._session.settings.host
        # Addresses appear as "bind:port" (MX map, relay) and "http://bind:port/..." (URLs).
        return {
            k: v.replace(f"{bind}:", f"{self._advertise}:") if k != "HARNESS_HOST" else v
            for k, v in env.items()
        }

    def entries(self, kind: Kind | None = None) -> list[Entry]:
        """Journal entries recorded during this test, of one kind or all."""
        return self.journal.entries(kind, since=self.since)

    def callbacks(self) -> list[Entry]:
        """The callbacks received during this test (``Kind.CALLBACK`` entries)."""
        from harness.journal import Kind

        return self.entries(Kind.CALLBACK)

    # -- assertions --------------------------------------------------------------------------

    def expect_callback(
        self,
        event: str,
        email: str,
        *,
        within: float | None = None,
        ts: tuple[float, float] | None = None,
    ) -> Entry:
        """Wait for a callback reporting *event* for *email*; its journal entry.

        Raises :class:`~harness.errors.ExpectationError` showing the nearest callbacks that did
        arrive, the checks that fired and their journal seqs.
        """
        __tracebackhide__ = True
        _in_a_loop("expect_callback")
        from harness.errors import ExpectationError
        from harness.expect import expect_callback

        within = self.timeout if within is None else within
        try:
            return expect_callback(
                self.journal, event, email, within=within, since=self.since, ts=ts
            )
        except ExpectationError as exc:
            raise _short(exc) from None

    async def expect_callback_async(
        self,
        event: str,
        email: str,
        *,
        within: float | None = None,
        ts: tuple[float, float] | None = None,
    ) -> Entry:
        """:meth:`expect_callback` for async tests: waits without blocking the test's loop."""
        __tracebackhide__ = True
        from harness.errors import ExpectationError
        from harness.expect import expect_callback_async

        within = self.timeout if within is None else within
        try:
            return await expect_callback_async(
                self.journal, event, email, within=within, since=self.since, ts=ts
            )
        except ExpectationError as exc:
            raise _short(exc) from None

    def expect_no_callbacks(
        self, *, within: float = 0.0, event: str | None = None, email: str | None = None
    ) -> None:
        """No callback (or none for *event* / *email*) arrived, waiting *within* seconds first."""
        __tracebackhide__ = True
        if within > 0:
            _in_a_loop("expect_no_callbacks")
        from harness.errors import ExpectationError
        from harness.expect import expect_no_callbacks

        try:
            expect_no_callbacks(
                self.journal, within=within, since=self.since, event=event, email=email
            )
        except ExpectationError as exc:
            raise _short(exc) from None

    async def expect_no_callbacks_async(
        self, *, within: float = 0.0, event: str | None = None, email: str | None = None
    ) -> None:
        """:meth:`expect_no_callbacks` for async tests: waits without blocking the test's loop."""
        __tracebackhide__ = True
        from harness.errors import ExpectationError
        from harness.expect import expect_no_callbacks_async

        try:
            await expect_no_callbacks_async(
                self.journal, within=within, since=self.since, event=event, email=email
            )
        except ExpectationError as exc:
            raise _short(exc) from None

    def expect_no_violations(
        self, *, allow: Iterable[str] = (), severity: Severity | None = None
    ) -> None:
        """No violation of *severity* (default: error) was found during this test."""
        __tracebackhide__ = True
        from harness.checks import Severity
        from harness.errors import ExpectationError
        from harness.expect import expect_no_violations

        try:
            expect_no_violations(
                self.journal,
                since=self.since,
                allow=allow,
                severity=Severity.ERROR if severity is None else severity,
            )
        except ExpectationError as exc:
            raise _short(exc) from None

    def violations(self) -> list[Violation]:
        """Every violation found during this test (in callbacks and cross-checks)."""
        from harness.expect import violations

        return violations(self.journal, since=self.since)

    def allow_violations(self, *codes: str) -> None:
        """Opt out of the after-test violation check: for *codes*, or for every code if none."""
        if codes:
            self._optout.codes.update(codes)
        else:
            self._optout.all_violations = True

    # -- after the test ----------------------------------------------------------------------

    def _problem(self) -> str | None:
        """What the test (or example) left behind: server errors, unmet expectations, or
        error-level violations; None when all is well."""
        errors = _server_errors(self._session.trap, self.journal, self.since)
        if errors:
            return _format_server_errors(errors, "during this test")
        problem = self._unmet_expectations()
        if problem is None and not self._optout.all_violations:
            problem = self._unallowed_violations()
        return problem

    def _unallowed_violations(self) -> str | None:
        from harness.errors import ConfigError, ExpectationError

        try:
            self.expect_no_violations(allow=self._allowed())
        except ConfigError as exc:
            return f"{self._node.nodeid}: @pytest.mark.ct_checks(allow=...): {exc}"
        except ExpectationError as exc:
            return (
                f"error-level check violations were recorded during this test:\n{exc}\n"
                "(opt out with @pytest.mark.ct_checks(allow=[...]) or "
                "allow_violations=True, or call ct_world.allow_violations() in the test)"
            )
        return None

    def _allowed(self) -> set[str]:
        return set(self._optout.codes)

    def _unmet_expectations(self) -> str | None:
        """Scenario expectations; a plain world has none."""
        return None

    def _attach_errors(self, item: pytest.Item) -> None:
        """After a failed test body: show server errors next to the real failure, and where
        the test's world can be looked at."""
        errors = _server_errors(self._session.trap, self.journal, self.since)
        lines = [_format_server_errors(errors, "during this test")] if errors else []
        lines.append(f"dashboard of this test's world: {self.dashboard_url}")
        item.add_report_section("call", "harness", "\n".join(lines))

    @property
    def dashboard_url(self) -> str:
        """The dashboard of this world (its journal since the last reset is this test's)."""
        return self.urls.base + "/"

    def _hold(self, item: pytest.Item) -> None:
        """``--ct-hold``: after a failed body, wait for Enter with the world still serving."""
        capture = item.config.pluginmanager.getplugin("capturemanager")
        reporter = item.config.pluginmanager.getplugin("terminalreporter")
        if capture is not None:
            # As --pdb does: stdin too, which capturing replaces with a reader that raises.
            capture.suspend_global_capture(in_=True)
        try:
            say = reporter.write_line if reporter is not None else print
            say("")
            say(f"clevertap-harness: {item.nodeid} failed; its world is still serving.")
            say(f"  dashboard  {self.dashboard_url}")
            say("  press Enter to go on (the next test resets the world)")
            try:
                sys.stdin.readline()
            except (OSError, ValueError):  # no terminal to read from: go on
                pass
        finally:
            if capture is not None:
                capture.resume_global_capture()

    def _finish(self) -> None:
        """Fixture teardown: errors logged after the body ended still belong to this test."""
        errors = self._session.trap.take()
        if errors:
            pytest.fail(_format_server_errors(errors, "after this test's body"), pytrace=False)


class ScenarioFixture(WorldFixture):
    """What ``ct_scenario`` gives a test: a :class:`WorldFixture` on the world of the test's
    ``@pytest.mark.ct_scenario`` file, plus :attr:`scenario` and :meth:`expect_scenario`.

    After a passing test body the scenario's expectations are judged (waiting for them up to
    the scenario's ``expect.within`` from the test's start) unless the test already called
    :meth:`expect_scenario` or opted out with ``@pytest.mark.ct_checks(check_scenario=False)``.
    """

    def __init__(
        self,
        scenario: Scenario,
        world: World,
        session: _Session,
        node: pytest.Item,
        *,
        timeout: float,
        advertise: str | None = None,
    ) -> None:
        self.scenario = scenario
        self.verdict: Verdict | None = None
        self._deadline = 0.0
        super().__init__(world, session, node, timeout=timeout, advertise=advertise)

    def _begin(self) -> None:
        super()._begin()
        self.verdict = None
        self._deadline = time.monotonic() + self.scenario.expect.within

    def _allowed(self) -> set[str]:
        return {*self._optout.codes, *self.scenario.expect.violations.allow}

    def expect_scenario(self, *, within: float | None = None) -> Verdict:
        """Wait until the scenario's expectations are decided, judge them, fail if unmet.

        Waits until nothing is pending any more, or for *within* seconds (default: what is
        left of the scenario's ``expect.within`` since the test started).
        """
        __tracebackhide__ = True
        _in_a_loop("expect_scenario")
        from harness.scenario.judge import pending

        deadline = self._deadline if within is None else time.monotonic() + within
        while pending(self.scenario, self.journal, started=self.started):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Wake on the next entry; the cap makes a verdict that turns on time alone (an
            # expected-absent callback) come no later than a quarter second after it is due.
            self.journal.wait_for(_anything, min(remaining, 0.25), since=self.journal.last_seq)
        return self._judge()

    async def expect_scenario_async(self, *, within: float | None = None) -> Verdict:
        """:meth:`expect_scenario` for async tests: never blocks the test's event loop."""
        __tracebackhide__ = True
        from harness.scenario.judge import pending

        deadline = self._deadline if within is None else time.monotonic() + within
        while pending(self.scenario, self.journal, started=self.started):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self.journal.wait_for_async(
                _anything, min(remaining, 0.25), since=self.journal.last_seq
            )
        return self._judge()

    def _judge(self) -> Verdict:
        __tracebackhide__ = True
        from harness.errors import ExpectationError
        from harness.scenario.judge import judge
        from harness.scenario.report import render_text

        verdict = judge(self.scenario, self.journal, started=self.started, finished=time.time())
        self.verdict = verdict
        if not verdict.passed:
            raise ExpectationError(render_text(verdict))
        return verdict

    def _unmet_expectations(self) -> str | None:
        if self.verdict is not None or not self._optout.check_scenario:
            return None
        from harness.errors import ExpectationError

        try:
            self.expect_scenario()
        except ExpectationError as exc:
            return (
                f"scenario expectations not met after the test:\n{exc}\n"
                "(opt out with @pytest.mark.ct_checks(check_scenario=False))"
            )
        return None


def _short(exc: BaseException) -> BaseException:
    """*exc* without the frames of the assertion helpers: pytest then shows the test's line and
    the message (the message is the diff; the helpers' insides are noise)."""
    return exc.with_traceback(None)


def _anything(entry: Entry) -> bool:
    return True


def _register(request: pytest.FixtureRequest, fixture: _Checked) -> None:
    node = request.node
    node.stash.setdefault(_CALL_FIXTURES, []).append(fixture)
    _per_example(request, fixture)


def _per_example(request: pytest.FixtureRequest, fixture: _Checked) -> None:
    """Inside ``@given``, reset the fixture before every example and check it after each one.

    One fixture value serves every example of a hypothesis test, so without this the journal,
    the duplicate index and the fault counters would carry over from one example to the next
    (a false CT402 for the second example that posts the same address). Hypothesis lets a
    plugin wrap each example through ``test.hypothesis.inner_test`` (public: pytest-trio uses
    it); the original is put back when the test ends.
    """
    handle = getattr(request.function, "hypothesis", None)
    inner = getattr(handle, "inner_test", None)
    if handle is None or inner is None:
        return

    @functools.wraps(inner)
    def each_example(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        fixture._begin()
        result = inner(*args, **kwargs)
        problem = fixture._problem()
        if problem is not None:
            from harness.errors import ExpectationError

            # An exception (not pytest.fail) so that hypothesis shrinks towards it.
            raise ExpectationError(problem)
        return result

    handle.inner_test = each_example
    request.addfinalizer(lambda: setattr(handle, "inner_test", inner))


def _in_a_loop(method: str) -> None:
    # Imported here: the plugin module stays light for suites that never use it.
    from harness.expect import refuse_blocking_wait

    refuse_blocking_wait(method, instead=f"...{method}_async")


@pytest.fixture
def ct_world(
    ct_session_world: World,
    ct_settings: HarnessSettings,
    _ct_session: _Session,
    request: pytest.FixtureRequest,
) -> Iterator[WorldFixture]:
    """The session world, reset for this test and checked after it (see :class:`WorldFixture`)."""
    if id(ct_session_world) not in _ct_session.defaults:
        # A world from an overriding fixture, started there. Its loop thread is known if it was
        # started with start_sync(); a world running in some other loop is matched by name.
        _ct_session.remember(ct_session_world)
        if ct_session_world.thread is None:
            _ct_session.trap.any_world_thread = True
    fixture = WorldFixture(
        ct_session_world,
        _ct_session,
        request.node,
        timeout=ct_settings.timeout,
        advertise=ct_settings.advertise,
    )
    _register(request, fixture)
    yield fixture
    fixture._finish()


@pytest.fixture
def ct_server(ct_world: WorldFixture) -> CleverTapServer:
    """The fake CleverTap of the (reset) session world."""
    return ct_world.clevertap


@pytest.fixture
def ct_mx(ct_world: WorldFixture) -> MailWorld:
    """The mail world of the (reset) session world: its accept-all relay."""
    return ct_world.mx


@pytest.fixture
def ct_scenario(
    ct_settings: HarnessSettings,
    _ct_session: _Session,
    request: pytest.FixtureRequest,
) -> Iterator[ScenarioFixture]:
    """The world of the test's ``@pytest.mark.ct_scenario("file.yaml")``, reset and checked."""
    from harness.errors import ScenarioError

    node = request.node
    marker = node.get_closest_marker("ct_scenario")
    if marker is None or len(marker.args) != 1 or marker.kwargs:
        pytest.fail(
            f"{node.nodeid}: the ct_scenario fixture needs "
            "@pytest.mark.ct_scenario('path/to/scenario.yaml') on the test, its class or module",
            pytrace=False,
        )
    path = Path(marker.args[0])
    if not path.is_absolute():
        path = Path(node.path).parent / path
    problem: str | None = None
    try:
        scenario, world = _ct_session.scenario_world(path.resolve())
    except ScenarioError as exc:
        problem = f"{node.nodeid}: scenario {str(path)!r} does not load:\n{exc}"
    if problem is not None:
        # Outside the except block, so that the problems are printed once, not twice.
        pytest.fail(problem, pytrace=False)
    fixture = ScenarioFixture(
        scenario,
        world,
        _ct_session,
        node,
        timeout=ct_settings.timeout,
        advertise=ct_settings.advertise,
    )
    _register(request, fixture)
    yield fixture
    fixture._finish()


class _MockCheck(_Checked):
    """The after-test check of ``ct_mock``: unmatched requests and error-level violations."""

    def __init__(self, mock: CleverTapMock) -> None:
        self.mock = mock

    def _begin(self) -> None:
        self.mock.reset()
        self.mock.since = self.mock.journal.last_seq

    def _problem(self) -> str | None:
        from harness.errors import ExpectationError

        try:
            self.mock.check()
        except ExpectationError as exc:
            return f"ct_mock after the test:\n{exc}"
        return None


@pytest.fixture
def ct_mock(request: pytest.FixtureRequest) -> Iterator[CleverTapMock]:
    """A started :class:`~harness.respx_mock.CleverTapMock` (no sockets), checked after the
    test like ``ct_world``; ``@pytest.mark.ct_mock(...)`` passes it arguments."""
    from harness.errors import ConfigError

    try:
        from harness.respx_mock import CleverTapMock
    except ModuleNotFoundError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(f"the ct_mock fixture: {missing}", pytrace=False)
    marker = request.node.get_closest_marker("ct_mock")
    args, kwargs = (marker.args, marker.kwargs) if marker is not None else ((), {})
    problem: str | None = None
    try:
        mock = CleverTapMock(*args, **kwargs)
    except (ConfigError, TypeError) as exc:
        problem = f"{request.node.nodeid}: @pytest.mark.ct_mock: {exc}"
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    _register(request, _MockCheck(mock))
    mock.start()
    try:
        yield mock
    finally:
        mock.stop(check=False)


# -- the after-test check --------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    try:
        result = yield
    except BaseException as exc:
        # The body failed: that is the error to show. Server errors go beside it, and no
        # "expectations not met" is raised on top of it.
        fixtures = item.stash.get(_CALL_FIXTURES, ())
        for fixture in fixtures:
            fixture._attach_errors(item)
        # A skip, an xfail or an interrupt is no failure to look at.
        not_failed = (pytest.skip.Exception, pytest.xfail.Exception, pytest.exit.Exception)
        if item.config.getoption("ct_hold", False) and not isinstance(
            exc, (*not_failed, KeyboardInterrupt)
        ):
            for fixture in fixtures:
                if isinstance(fixture, WorldFixture):
                    fixture._hold(item)
                    break
        raise
    for fixture in item.stash.get(_CALL_FIXTURES, ()):
        fixture._check()
    return result
