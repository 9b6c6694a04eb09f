"""The scenario runner: world up, integration up, campaign in, clicks out, wait, judge.

For each scenario (docs/runner.md):

1. start the :class:`~harness.world.World` the scenario describes (fake MX hosts or relay, fake
   CleverTap, one journal);
2. start the integration under test with the environment of docs/integration-contract.md and wait
   for its ready file (or use the addresses of one already running); its bounce intake becomes
   the world's DSN destination;
3. play CleverTap: submit the campaign (:mod:`harness.scenario.campaign`), then try the
   scenario's submission probes, bad credentials the integration must refuse
   (:mod:`harness.scenario.probes`);
4. play the recipients: perform the scripted clicks once their messages arrived
   (:mod:`harness.scenario.clicks`);
5. wait until the run has settled (every recipient settled, every scheduled DSN sent and its
   ``expect.after_dsn`` window over, no expected callback still missing, then ``expect.quiet``
   without anything new) or the ``expect.within`` deadline (later only for DSNs still due);
6. stop the integration (SIGTERM to its process group, SIGKILL after
   ``integration.stop_timeout``; its output is kept), judge from the journal
   (:func:`harness.scenario.judge.judge`, callbacks flushed at shutdown included, a kill failing
   the scenario), stop the world.

A harness error in one scenario (an exception of the harness itself) is that scenario's failed
result, with the reason; the other scenarios of the run go on.

Everything is async; :func:`run_scenarios_sync` is the entry point for sync callers (the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness._loop import run_main
from harness.errors import ConfigError, HarnessError
from harness.journal import Entry, Journal, Kind, MemoryJournal
from harness.records import (
    Callback,
    Dsn,
    DsnSkipped,
    Note,
    Sent,
    SmtpClose,
    SmtpMessage,
    SmtpReply,
)
from harness.scenario.campaign import Submission, submit_campaign
from harness.scenario.clicks import ClickScope, click_notes, perform_click
from harness.scenario.driver import PROCESS_THRESHOLD, DriverError, DriverProcess
from harness.scenario.judge import ExpectationResult, Stopped, Verdict, judge, pending
from harness.scenario.model import ReadyProbe, Scenario
from harness.scenario.probes import probe_notes, run_probes
from harness.scenario.sut import (
    SutAddresses,
    SutError,
    SutProcess,
    integration_of,
    resolve_command,
    sut_base_env,
    wait_for_probe,
)
from harness.smtp.tls import Certificate, make_certificate
from harness.vocab import address_key
from harness.world import World

__all__ = [
    "Progress",
    "RunOptions",
    "ScenarioResult",
    "Settling",
    "harness_error_text",
    "run_scenario",
    "run_scenarios",
    "run_scenarios_sync",
    "verdict_of",
]


@dataclass(frozen=True, slots=True)
class Progress:
    """What a run is doing, for progress displays."""

    scenario: str
    index: int
    """1-based position of the scenario in the run."""
    total: int
    phase: str
    """starting | submitting | waiting | stopping | judging | done"""
    submitted: int = 0
    messages: int = 0
    callbacks: int = 0


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How scenarios are run (the CLI's options)."""

    sut: Sequence[str] | None = None
    """Argv that replaces every scenario's integration command (``--sut``)."""
    jobs: int = 1
    """Scenarios run at once (each has its own world and integration, all on port 0)."""
    connections: int = 8
    """SMTP connections the campaign driver uses at once."""
    quiet: float | None = None
    """Overrides every scenario's ``expect.quiet``: once everything settled, how many seconds
    nothing new may happen before judging."""
    stop_grace: float | None = None
    """Overrides every scenario's ``integration.stop_timeout``: seconds the integration gets to
    exit after SIGTERM before it is killed (and the scenario fails)."""
    driver_process: bool | None = None
    """Submit the campaign from a process of its own (:mod:`harness.scenario.driver`); None:
    for campaigns of ``PROCESS_THRESHOLD`` (1,000) recipients or more."""
    on_progress: Callable[[Progress], None] | None = None

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"jobs must be at least 1, got {self.jobs!r}")
        if self.connections < 1:
            raise ConfigError(f"connections must be at least 1, got {self.connections!r}")


@dataclass(slots=True)
class ScenarioResult:
    """The outcome of one scenario: the verdict, or why the run itself failed."""

    scenario: Scenario
    journal: Journal
    verdict: Verdict | None = None
    error: str | None = None
    """The run failed before it could be judged (the integration did not start, ...)."""
    harness_error: bool = False
    """The failure is the harness's own (an exception in the harness), not the integration's."""
    sut_command: list[str] | None = None
    sut_addresses: SutAddresses | None = None
    sut_exit: int | None = None
    sut_killed: bool = False
    """Still running ``integration.stop_timeout`` after SIGTERM: killed with SIGKILL."""
    sut_log: str = ""
    """The integration's output (stdout and stderr), the tail kept for the report."""
    submitted: int = 0
    accepted: int = 0
    started_at: float = 0.0
    """Wall-clock time the campaign submission began (what ``ts`` checks measure from)."""
    settled: bool = False
    """The wait ended because the run settled (not at the deadline)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: world, sut_start, submit, wait, stop, judge, total."""
    driver_cpu: float | None = None
    """CPU seconds of the campaign driver's own process, when it had one (large campaigns)."""

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def passed(self) -> bool:
        return self.error is None and self.verdict is not None and bool(self.verdict.passed)


async def run_scenario(
    scenario: Scenario,
    options: RunOptions | None = None,
    *,
    journal: Journal | None = None,
    index: int = 1,
    total: int = 1,
) -> ScenarioResult:
    """Run one scenario end to end and judge it. Never raises for what the integration does,
    nor for an error of the harness itself (that is the result's ``error``, with
    ``harness_error``); :class:`ConfigError` when the integration cannot even be found."""
    options = options or RunOptions()
    journal = journal if journal is not None else MemoryJournal()
    result = ScenarioResult(scenario, journal)
    began = time.monotonic()

    def report(phase: str, **counts: int) -> None:
        if options.on_progress is not None:
            options.on_progress(Progress(scenario.name, index, total, phase, **counts))

    integration = integration_of(scenario)
    command: tuple[list[str], Path] | None = None
    if options.sut is not None or integration.addresses is None:
        command = resolve_command(scenario, options.sut)
        result.sut_command = command[0]
    grace = options.stop_grace if options.stop_grace is not None else integration.stop_timeout
    report("starting", messages=len(scenario.recipients))
    own_process = options.driver_process
    if own_process is None:
        own_process = len(scenario.recipients) >= PROCESS_THRESHOLD
    driver = DriverProcess() if own_process else None
    with tempfile.TemporaryDirectory(prefix="harness-run-") as tmp:
        sut: SutProcess | None = None
        try:
            if driver is not None:
                await driver.start()  # its imports overlap the world's and the SUT's start
            world = World.from_scenario(scenario, journal=journal)
            mark = time.monotonic()
            async with world:
                result.timings["world"] = time.monotonic() - mark
                try:
                    sut, addresses, submission = await _start_sut(
                        scenario, world, command, Path(tmp), grace
                    )
                except SutError as exc:
                    result.error = str(exc)
                    return result
                finally:
                    result.timings["sut_start"] = time.monotonic() - mark - result.timings["world"]
                result.sut_addresses = addresses
                try:
                    notes = await _drive(
                        scenario, world, submission, addresses, options, result, report, driver
                    )
                finally:
                    # Stopped while the world still runs, whatever happened: what it flushes
                    # at shutdown reaches the fake CleverTap.
                    mark = time.monotonic()
                    stopped: Stopped | None = None
                    if sut is not None:
                        report(
                            "stopping",
                            submitted=result.submitted,
                            messages=len(scenario.recipients),
                        )
                        stopped, sut = await _stop_sut(sut, grace, result, journal), None
                    result.timings["stop"] = time.monotonic() - mark
                mark = time.monotonic()
                report("judging", submitted=result.submitted, messages=len(scenario.recipients))
                # Judged once the integration is gone: the callbacks it flushed at SIGTERM count.
                result.verdict = judge(
                    scenario,
                    journal,
                    started=result.started_at,
                    finished=time.time(),
                    stopped=stopped,
                    notes=notes,
                )
                result.timings["judge"] = time.monotonic() - mark
        except HarnessError as exc:  # the world could not start, the journal is full, ...
            result.verdict = None
            result.error = str(exc)
            result.harness_error = isinstance(exc, DriverError)
        except Exception as exc:  # one scenario's harness error is its own failure
            result.verdict = None
            result.error = harness_error_text(exc)
            result.harness_error = True
        finally:
            if sut is not None:
                await _stop_sut(sut, grace, result, None)
            if driver is not None:
                await driver.close()
            result.timings["total"] = time.monotonic() - began
            report("done", submitted=result.submitted, messages=len(scenario.recipients))
    return result


def harness_error_text(exc: BaseException) -> str:
    """An exception of the harness as one readable line: its type, message and where in the
    harness it was raised (the innermost frame of the harness's own code)."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    package = str(Path(__file__).resolve().parents[1])
    own = [f for f in frames if f.filename.startswith(package)] or frames
    if own:
        frame = own[-1]
        where = f" at {Path(frame.filename).name}:{frame.lineno} in {frame.name}"
    return f"harness error{where}: {type(exc).__name__}: {exc}"


async def _stop_sut(
    sut: SutProcess, grace: float, result: ScenarioResult, journal: Journal | None
) -> Stopped:
    early = sut.exited
    mark = time.monotonic()
    result.sut_exit = await sut.stop(grace)
    seconds = time.monotonic() - mark
    result.sut_killed = sut.killed
    result.sut_log = sut.log_tail()
    stopped = Stopped(
        timeout=grace,
        exit_code=result.sut_exit,
        killed=sut.killed,
        seconds=None if early else seconds,
        early=early,
    )
    if journal is not None:
        if sut.killed:
            what = f"killed with SIGKILL, still running {grace:g} s after SIGTERM"
        elif early:
            what = f"had exited on its own (status {result.sut_exit}) before SIGTERM"
        else:
            what = f"exited (status {result.sut_exit}) {seconds:.2f} s after SIGTERM"
        with contextlib.suppress(HarnessError):
            journal.append(Note(source="runner", what="integration stopped", detail=what))
    return stopped


async def _start_sut(
    scenario: Scenario,
    world: World,
    command: tuple[list[str], Path] | None,
    tmp: Path,
    grace: float,
) -> tuple[SutProcess | None, SutAddresses, Submission]:
    integration = integration_of(scenario)
    certificate: Certificate | None = None
    if integration.tls != "none":
        certificate = make_certificate(("localhost",))
    sut: SutProcess | None = None
    addresses: SutAddresses | None = None
    if command is not None:
        argv, cwd = command
        ready_file = tmp / "ready.json"
        env = sut_base_env()
        env.update(world.sut_env())
        env["HARNESS_READY_FILE"] = str(ready_file)
        env["HARNESS_RETRY_BUDGET"] = f"{scenario.retry_budget:g}"
        env["HARNESS_STOP_TIMEOUT"] = f"{grace:g}"
        env["HARNESS_SUBMISSION_TLS"] = integration.tls
        if certificate is not None:
            cert_file, key_file = certificate.write(tmp / "tls")
            env["HARNESS_TLS_CERT"], env["HARNESS_TLS_KEY"] = str(cert_file), str(key_file)
        if integration.auth is not None:
            env["HARNESS_SUBMISSION_USER"] = integration.auth.username
            env["HARNESS_SUBMISSION_PASSWORD"] = integration.auth.password
        env.update(integration.env)
        sut = SutProcess(argv, cwd=cwd, env=env, log_path=tmp / "sut.log")
        await sut.start()
        try:
            addresses = await sut.wait_ready(
                None if integration.ready else ready_file,
                integration.ready,
                integration.ready_timeout,
            )
        except SutError as exc:
            await sut.stop(1.0)
            tail = sut.log_tail()
            raise SutError(f"{exc}\n--- its output ---\n{tail or '(nothing)'}") from exc
        except BaseException:
            await sut.stop(1.0)  # never left running, whatever went wrong
            raise
        if addresses is None:
            try:
                addresses = _addresses_from_scenario(scenario)
            except SutError:
                await sut.stop(1.0)
                raise
    else:
        addresses = _addresses_from_scenario(scenario)
        probe = integration.ready or ReadyProbe(
            tcp=f"{addresses.smtp[0]}:{addresses.smtp[1]}", http=None
        )
        await wait_for_probe(probe, integration.ready_timeout)
    if addresses.bounce is not None:
        world.bounce_intake = addresses.bounce
    submission = Submission(
        host=addresses.smtp[0],
        port=addresses.smtp[1],
        tls=integration.tls,
        auth=integration.auth,
        tls_context=certificate.client_context() if certificate is not None else None,
    )
    return sut, addresses, submission


def _addresses_from_scenario(scenario: Scenario) -> SutAddresses:
    integration = integration_of(scenario)
    given = integration.addresses
    if given is None:
        raise SutError(
            "the integration's readiness probe answered, but its SMTP address is unknown: "
            "without the ready file, give integration.addresses"
        )
    host, _, port = given.smtp.rpartition(":")
    bounce = None
    if given.bounce is not None:
        bhost, _, bport = given.bounce.rpartition(":")
        bounce = (bhost.strip("[]"), int(bport))
    return SutAddresses((host.strip("[]"), int(port)), bounce, given.http)


async def _drive(
    scenario: Scenario,
    world: World,
    submission: Submission,
    addresses: SutAddresses,
    options: RunOptions,
    result: ScenarioResult,
    report: Callable[..., None],
    driver: DriverProcess | None,
) -> list[str]:
    """Submit, click, and wait until the run settles or its time is up; returns notes for the
    verdict (what was still open when the wait ended at the deadline)."""
    journal = world.journal
    total = len(scenario.recipients)
    since = journal.last_seq
    started = time.time()
    result.started_at = started
    deadline = started + scenario.expect.within
    intake = (
        Submission(host=addresses.bounce[0], port=addresses.bounce[1])
        if addresses.bounce is not None
        else submission
    )
    # The clicker contacts only the harness's world: loopback, what the integration announced,
    # and the scenario's unsubscribe_allow_hosts (docs/runner.md).
    scope = ClickScope.build(
        scenario.unsubscribe_allow_hosts,
        announced=[
            addresses.smtp[0],
            addresses.bounce[0] if addresses.bounce is not None else None,
            addresses.http,
        ],
    )
    clicks = [
        asyncio.create_task(
            perform_click(
                click, journal, deadline=deadline, intake=intake, since=since, scope=scope
            ),
            name=f"click {click.recipient}",
        )
        for click in scenario.unsubscribe
    ]
    quiet = options.quiet if options.quiet is not None else scenario.expect.quiet
    settling = Settling(
        scenario.recipients, since, quiet=quiet, after_dsn=scenario.expect.after_dsn
    )
    mark = time.monotonic()
    notes: list[str] = []
    try:
        report("submitting", messages=total)

        def sent(count: int) -> None:
            result.submitted = count
            if count % 50 == 0 or count == total:
                report("submitting", submitted=count, messages=total, callbacks=settling.callbacks)

        if driver is not None:
            result.accepted = await driver.submit(
                scenario.campaign,
                submission,
                journal.append,
                connections=options.connections,
                on_sent=sent,
            )
            result.driver_cpu = driver.cpu
        else:
            result.accepted = await submit_campaign(
                scenario.campaign,
                submission,
                journal.append,
                connections=options.connections,
                on_sent=sent,
            )
        result.timings["submit"] = time.monotonic() - mark
        notes.extend(await _probe(scenario, submission, journal))
        mark = time.monotonic()
        while True:
            now = time.time()
            settling.update(journal)
            clicking = sum(not c.done() for c in clicks)
            missing = pending(scenario, journal)
            if settling.ready(now, busy=bool(clicking) or missing):
                result.settled = True
                break
            limit = settling.limit(deadline)
            if now >= limit:
                notes.extend(settling.open_items(clicking=clicking, missing=missing))
                break
            report(
                "waiting", submitted=result.submitted, messages=total, callbacks=settling.callbacks
            )
            # Woken by the next entry; else at the next moment the run could settle.
            wake = settling.ready_at(busy=bool(clicking) or missing)
            wake = now + 0.1 if wake is None else wake
            await journal.wait_for_async(
                lambda e: True, max(0.0, min(wake, limit) - now), since=journal.last_seq
            )
        result.timings["wait"] = time.monotonic() - mark
    finally:
        for task in clicks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*clicks, return_exceptions=True)
    # A click the clicker refused to make (outside the harness's world) says so in the report.
    notes.extend(click_notes(journal.iter_entries(Kind.CLICK, since=since)))
    return notes


async def _probe(scenario: Scenario, submission: Submission, journal: Journal) -> list[str]:
    """The scenario's submission probes (after the campaign, before the wait); notes for the
    probes that could not finish. CT601 judges the others from the journal."""
    probes = integration_of(scenario).submission_probes
    if not probes:
        return []
    entries = await run_probes(
        probes,
        submission,
        journal,
        sender=scenario.campaign.sender,
        recipient=scenario.recipients[0],
    )
    return probe_notes(entries)


DSN_SLACK = 5.0
"""Seconds past a DSN's due time the run waits for it to be sent (past the deadline too)."""


class Settling:
    """Whether a run can be judged yet, updated incrementally from its journal (a
    10,000-recipient campaign is scanned once).

    The run has settled when

    - every recipient has a final observable outcome: its message was accepted by a fake mail
      server, a callback named it, or the integration refused its submission (absent-only
      scenarios, such as greylisting, would otherwise be judged before the integration retried);
    - every scheduled DSN (a recipient accepted with an accept-then-bounce rule: its
      ``SmtpReply`` at stage ``later`` carries ``bounce.after``; due that long after its
      message's ``SmtpMessage``) was sent (a ``Dsn`` entry) or given up (``DsnSkipped``), and
      ``after_dsn`` seconds have passed since each DSN was sent: what the integration makes of
      it, a callback or a duplicate, is part of the run;
    - after a callback that was refused with a ``Retry-After``, that long has passed (its resend
      is part of the run);
    - and then nothing new has been journaled for ``quiet`` seconds.

    The caller adds what it knows besides the journal (clicks in flight, expected callbacks
    still missing) as *busy*.
    """

    def __init__(
        self,
        recipients: Sequence[str],
        since: int,
        *,
        quiet: float,
        after_dsn: float,
        now: float | None = None,
    ) -> None:
        self.open = {address_key(r) for r in recipients}
        self.since = since
        self.quiet = quiet
        self.after_dsn = after_dsn
        self.callbacks = 0
        self.last_activity = time.time() if now is None else now
        self.hold_until = 0.0
        """Not judged before this (a DSN's consequence window, a Retry-After)."""
        self.dsn_hold = 0.0
        """The end of the last DSN's consequence window (the deadline does not cut it short)."""
        self._later: dict[tuple[str, int | None, str], float] = {}
        """(session, transaction, recipient) accepted with a report to come -> its delay."""
        self.dsns_due: dict[tuple[str, str], float] = {}
        """(queue id, recipient) -> when its DSN is due."""

    def update(self, journal: Journal) -> None:
        for entry in journal.entries(since=self.since):
            self._see(entry)
            self.since = entry.seq

    def ready(self, now: float, *, busy: bool) -> bool:
        """True when the run can be judged at *now*."""
        at = self.ready_at(busy=busy)
        return at is not None and now >= at

    def ready_at(self, *, busy: bool) -> float | None:
        """When the run will be ready if nothing new happens, or None while something is still
        open (then only a new entry, or the passing of time for a click, can change that)."""
        if busy or self.open or self.dsns_due:
            return None
        return max(self.last_activity + self.quiet, self.hold_until)

    def limit(self, deadline: float) -> float:
        """When waiting ends whatever is open: the deadline, later only for DSNs still due and
        the consequence window of those sent."""
        limit = max(deadline, self.dsn_hold)
        if self.dsns_due:
            limit = max(limit, max(self.dsns_due.values()) + self.after_dsn + DSN_SLACK)
        return limit

    def open_items(self, *, clicking: int = 0, missing: bool = False) -> list[str]:
        """What was still open when the wait ended, for the verdict's notes."""
        items: list[str] = []
        if self.open:
            shown = ", ".join(sorted(self.open)[:5]) + (", ..." if len(self.open) > 5 else "")
            items.append(f"{len(self.open)} recipient(s) without a final outcome: {shown}")
        if self.dsns_due:
            items.append(f"{len(self.dsns_due)} DSN(s) due but never sent")
        if clicking:
            items.append(f"{clicking} click(s) still waiting for their message")
        if missing:
            items.append("expected callbacks still missing")
        if not items:
            return []
        return ["judged when the time was up, not settled: " + "; ".join(items)]

    def _see(self, entry: Entry) -> None:
        record = entry.data
        # A connection's end says nothing new unless the server hung up on a transaction: an
        # integration that keeps its connections to the MX open (a connection cache, as
        # Postfix's) closes them once idle, and that must not extend the quiet period.
        if not (isinstance(record, SmtpClose) and record.dropped_message is None):
            self.last_activity = max(self.last_activity, entry.at)
        if isinstance(record, Callback):
            self.callbacks += 1
            for event in record.events:
                self.open.discard(address_key(event.email))
            if not record.accepted and record.fault is not None and record.fault.retry_after:
                self.hold_until = max(self.hold_until, entry.at + record.fault.retry_after)
        elif isinstance(record, SmtpReply):
            if record.stage == "later" and record.bounce is not None:
                key = (record.session, record.transaction, address_key(record.recipient))
                self._later[key] = record.bounce.after
        elif isinstance(record, SmtpMessage):
            # Journaled when the 250 is given, whether or not the client keeps the connection.
            for recipient in record.recipients:
                address = address_key(recipient.address)
                self.open.discard(address)
                after = self._later.pop((record.session, record.transaction, address), None)
                if after is not None:
                    self.dsns_due[(record.id, address)] = entry.at + after
        elif isinstance(record, Dsn):
            self._dsn_done(record.message, [r.recipient for r in record.recipients])
            self.dsn_hold = max(self.dsn_hold, entry.at + self.after_dsn)
            self.hold_until = max(self.hold_until, self.dsn_hold)
        elif isinstance(record, DsnSkipped):
            self._dsn_done(record.message, list(record.recipients))
        elif isinstance(record, Sent) and not record.ok:
            for rcpt in record.to:
                self.open.discard(address_key(rcpt))

    def _dsn_done(self, message: str | None, recipients: Sequence[str]) -> None:
        unmatched = 0
        for recipient in recipients:
            address = address_key(recipient)
            keys = [k for k in self.dsns_due if k[1] == address and message in (None, k[0])]
            if keys:
                del self.dsns_due[min(keys, key=self.dsns_due.__getitem__)]
            else:
                unmatched += 1
        # A DSN may name another address than the one sent to (aliasing at the next hop): it
        # still settles that many recipients of its message, the earliest due first.
        if unmatched and message is not None:
            mine = sorted(
                (k for k in self.dsns_due if k[0] == message), key=self.dsns_due.__getitem__
            )
            for key in mine[:unmatched]:
                del self.dsns_due[key]


def verdict_of(result: ScenarioResult) -> Verdict:
    """The result's verdict; for a run that failed before it could be judged, a failed verdict
    whose one unmet expectation (at path ``integration``, or ``harness`` for an error of the
    harness itself) says why, with the integration's output, so that every report format shows
    it."""
    if result.verdict is not None:
        return result.verdict
    scenario = result.scenario
    reason = result.error or "the run did not finish"
    if result.sut_log.strip() and result.sut_log.strip() not in reason:
        reason += "\n--- its output ---\n" + result.sut_log.rstrip()
    started = result.started_at or time.time()
    if result.harness_error:
        expectation = ExpectationResult(
            kind="integration",
            path="harness",
            description="the harness runs the scenario to the end",
            met=False,
            reason=reason,
        )
    else:
        expectation = ExpectationResult(
            kind="violations",
            path="integration",
            description="the integration under test starts and takes the campaign",
            met=False,
            reason=reason,
        )
    return Verdict(
        scenario=scenario.name,
        path=str(scenario.source) if scenario.source is not None else None,
        passed=False,
        expectations=[expectation],
        violations=[],
        unexpected=[],
        allowed=(),
        started=started,
        finished=started + result.timings.get("total", 0.0),
        deadline=started + scenario.expect.within,
    )


async def run_scenarios(
    scenarios: Sequence[Scenario], options: RunOptions | None = None
) -> list[ScenarioResult]:
    """Run *scenarios* (``options.jobs`` at a time), results in the order given.

    Every scenario gets a result: one whose run raised (a configuration problem found late, an
    error of the harness itself) is a failed result with the reason; the others go on."""
    options = options or RunOptions()
    gate = asyncio.Semaphore(options.jobs)
    total = len(scenarios)

    async def one(i: int, scenario: Scenario) -> ScenarioResult:
        async with gate:
            try:
                return await run_scenario(scenario, options, index=i, total=total)
            except HarnessError as exc:
                return ScenarioResult(scenario, MemoryJournal(), error=str(exc))
            except Exception as exc:  # never lose the other scenarios' reports
                return ScenarioResult(
                    scenario, MemoryJournal(), error=harness_error_text(exc), harness_error=True
                )

    return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(scenarios, start=1))))


def run_scenarios_sync(
    scenarios: Sequence[Scenario], options: RunOptions | None = None
) -> list[ScenarioResult]:
    """:func:`run_scenarios` for sync code (its own event loop: uvloop when installed, as for
    ``harness serve``)."""
    return run_main(run_scenarios(scenarios, options))
