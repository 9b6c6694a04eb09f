"""The scenario runner: world up, integration up, campaign in, clicks out, wait, judge.

For each scenario (docs/runner.md):

1. start the :class:`~harness.world.World` the scenario describes (fake MX hosts or relay, fake
   CleverTap, one journal);
2. start the integration under test with the environment of docs/integration-contract.md and wait
   for its ready file (or use the addresses of one already running); its bounce intake becomes
   the world's DSN destination;
3. play CleverTap: submit the campaign (:mod:`harness.scenario.campaign`);
4. play the recipients: perform the scripted clicks once their messages arrived
   (:mod:`harness.scenario.clicks`);
5. wait until nothing is pending any more (every recipient settled, no expectation still
   waiting, the journal quiet for a moment) or the ``expect.within`` deadline;
6. judge from the journal (:func:`harness.scenario.judge.judge`), stop the integration (SIGTERM,
   then SIGKILL after a grace period; its output is kept), stop the world.

Everything is async; :func:`run_scenarios_sync` is the entry point for sync callers (the CLI).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.journal import Entry, Journal, MemoryJournal
from harness.records import Callback, Sent, SmtpMessage
from harness.scenario.campaign import Submission, submit_campaign
from harness.scenario.clicks import perform_click
from harness.scenario.judge import ExpectationResult, Verdict, judge, pending
from harness.scenario.model import ReadyProbe, Scenario
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
    """starting | submitting | waiting | judging | done"""
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
    quiet: float = 0.5
    """Once nothing is pending, the journal must stay this many seconds without a new callback
    before judging: a duplicate or unexpected callback right after the expected ones counts."""
    stop_grace: float = 8.0
    """Seconds the integration gets to exit after SIGTERM before it is killed."""
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
    sut_command: list[str] | None = None
    sut_addresses: SutAddresses | None = None
    sut_exit: int | None = None
    sut_killed: bool = False
    sut_log: str = ""
    """The integration's output (stdout and stderr), the tail kept for the report."""
    submitted: int = 0
    accepted: int = 0
    started_at: float = 0.0
    """Wall-clock time the campaign submission began (what ``ts`` checks measure from)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: world, sut_start, submit, wait, judge, stop, total."""

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
    """Run one scenario end to end and judge it. Never raises for what the integration does;
    :class:`ConfigError` when the integration cannot even be found."""
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
    report("starting", messages=len(scenario.recipients))
    world = World.from_scenario(scenario, journal=journal)
    with tempfile.TemporaryDirectory(prefix="harness-run-") as tmp:
        sut: SutProcess | None = None
        mark = time.monotonic()
        try:
            async with world:
                result.timings["world"] = time.monotonic() - mark
                try:
                    sut, addresses, submission = await _start_sut(
                        scenario, world, command, Path(tmp)
                    )
                except SutError as exc:
                    result.error = str(exc)
                    return result
                finally:
                    result.timings["sut_start"] = time.monotonic() - mark - result.timings["world"]
                result.sut_addresses = addresses
                await _drive(scenario, world, submission, addresses, options, result, report)
                mark = time.monotonic()
                report("judging", submitted=result.submitted, messages=len(scenario.recipients))
                result.verdict = judge(
                    scenario, journal, started=result.started_at, finished=time.time()
                )
                result.timings["judge"] = time.monotonic() - mark
                mark = time.monotonic()
                if sut is not None:
                    await _stop_sut(sut, options, result)
                    sut = None
                result.timings["stop"] = time.monotonic() - mark
        finally:
            if sut is not None:
                await _stop_sut(sut, options, result)
            result.timings["total"] = time.monotonic() - began
            report("done", submitted=result.submitted, messages=len(scenario.recipients))
    return result


async def _stop_sut(sut: SutProcess, options: RunOptions, result: ScenarioResult) -> None:
    result.sut_exit = await sut.stop(options.stop_grace)
    result.sut_killed = sut.killed
    result.sut_log = sut.log_tail()


async def _start_sut(
    scenario: Scenario,
    world: World,
    command: tuple[list[str], Path] | None,
    tmp: Path,
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
        if addresses is None:
            addresses = _addresses_from_scenario(scenario)
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
) -> None:
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
    clicks = [
        asyncio.create_task(
            perform_click(click, journal, deadline=deadline, intake=intake, since=since),
            name=f"click {click.recipient}",
        )
        for click in scenario.unsubscribe
    ]
    settled = _Settled(scenario.recipients, since)
    mark = time.monotonic()
    try:
        report("submitting", messages=total)

        def sent(count: int) -> None:
            result.submitted = count
            if count % 50 == 0 or count == total:
                report("submitting", submitted=count, messages=total, callbacks=settled.callbacks)

        result.accepted = await submit_campaign(
            scenario.campaign, submission, journal, connections=options.connections, on_sent=sent
        )
        result.timings["submit"] = time.monotonic() - mark
        mark = time.monotonic()
        quiet_since: float | None = None
        while True:
            now = time.time()
            if now >= deadline:
                break
            settled.update(journal)
            busy = (
                not all(c.done() for c in clicks) or not settled.done or pending(scenario, journal)
            )
            if busy:
                quiet_since = None
            else:
                last = settled.last_activity
                quiet_since = max(quiet_since or last, last)
                if now - quiet_since >= options.quiet:
                    break
            report(
                "waiting", submitted=result.submitted, messages=total, callbacks=settled.callbacks
            )
            await journal.wait_for_async(
                lambda e: True, min(0.1, max(0.0, deadline - now)), since=journal.last_seq
            )
        result.timings["wait"] = time.monotonic() - mark
    finally:
        for task in clicks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*clicks, return_exceptions=True)


class _Settled:
    """Which recipients have a final observable outcome: their message was accepted by a fake
    mail server *and* that SMTP session ended (the integration's attempt is over), a callback
    named them, or the integration refused their submission.

    Absent-only scenarios (greylisting, slow servers) have nothing the judge could be waiting
    for, so without this the run would be judged before the integration had even retried.
    Updated incrementally from the journal (a 10,000-recipient campaign is scanned once).
    """

    def __init__(self, recipients: Sequence[str], since: int) -> None:
        self.open = {address_key(r) for r in recipients}
        self.since = since
        self.callbacks = 0
        self.last_activity = time.time()

    @property
    def done(self) -> bool:
        return not self.open

    def update(self, journal: Journal) -> None:
        for entry in journal.entries(since=self.since):
            self._see(entry)
            self.since = entry.seq

    def _see(self, entry: Entry) -> None:
        record = entry.data
        self.last_activity = max(self.last_activity, entry.at)
        if isinstance(record, Callback):
            self.callbacks += 1
            for event in record.events:
                self.open.discard(address_key(event.email))
        elif isinstance(record, SmtpMessage):
            # Journaled when the 250 is given, whether or not the client keeps the connection.
            for recipient in record.recipients:
                self.open.discard(address_key(recipient.address))
        elif isinstance(record, Sent) and not record.ok:
            for rcpt in record.to:
                self.open.discard(address_key(rcpt))


def verdict_of(result: ScenarioResult) -> Verdict:
    """The result's verdict; for a run that failed before it could be judged, a failed verdict
    whose one unmet expectation (at path ``integration``) says why, with the integration's
    output, so that every report format shows it."""
    if result.verdict is not None:
        return result.verdict
    scenario = result.scenario
    reason = result.error or "the run did not finish"
    if result.sut_log.strip() and result.sut_log.strip() not in reason:
        reason += "\n--- its output ---\n" + result.sut_log.rstrip()
    started = result.started_at or time.time()
    return Verdict(
        scenario=scenario.name,
        path=str(scenario.source) if scenario.source is not None else None,
        passed=False,
        expectations=[
            ExpectationResult(
                kind="violations",
                path="integration",
                description="the integration under test starts and takes the campaign",
                met=False,
                reason=reason,
            )
        ],
        violations=[],
        unexpected=[],
        allowed=(),
        started=started,
        finished=started + result.timings.get("total", 0.0),
        deadline=started + scenario.expect.within,
        notes=[reason],
    )


async def run_scenarios(
    scenarios: Sequence[Scenario], options: RunOptions | None = None
) -> list[ScenarioResult]:
    """Run *scenarios* (``options.jobs`` at a time), results in the order given."""
    options = options or RunOptions()
    gate = asyncio.Semaphore(options.jobs)
    total = len(scenarios)

    async def one(i: int, scenario: Scenario) -> ScenarioResult:
        async with gate:
            try:
                return await run_scenario(scenario, options, index=i, total=total)
            except HarnessError as exc:
                return ScenarioResult(scenario, MemoryJournal(), error=str(exc))

    return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(scenarios, start=1))))


def run_scenarios_sync(
    scenarios: Sequence[Scenario], options: RunOptions | None = None
) -> list[ScenarioResult]:
    """:func:`run_scenarios` for sync code (its own event loop)."""
    return asyncio.run(run_scenarios(scenarios, options))
