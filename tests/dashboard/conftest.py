"""A real world (fake MX host + fake CleverTap) with some mail and callbacks in its journal, and
a real headless Chromium driven by selenium (skipped, with the reason, when none is installed)."""

from __future__ import annotations

import os
import shutil
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from harness.journal import Kind
from harness.scenario.loader import load_scenario
from harness.world import World

SCENARIO = """\
name: dashboard
mx:
  example.com:
    ok@example.com: accept
    full@example.com: mailbox_full
    late@example.com: {accept_then_bounce: invalid_address, after: 0s, dsn: postfix}
campaign:
  from: news@brand.test
  to: [ok@example.com, full@example.com, late@example.com]
"""


def send_mail(world: World) -> None:
    """One campaign message to the three recipients, over real SMTP, as an integration would."""
    host = next(iter(world.mail.hosts.values()))
    message = EmailMessage()
    message["From"] = "news@brand.test"
    message["To"] = "ok@example.com, full@example.com, late@example.com"
    message["Subject"] = "November news"
    message["X-CleverTap_META"] = "eyJ3enJrX2FjY3QiOiJURVNULTEifQ=="
    message.set_content("Hello from the dashboard test.\n")
    with smtplib.SMTP(host.bind, host.port, timeout=10) as smtp:
        refused = smtp.send_message(
            message,
            from_addr="bounces@brand.test",
            to_addrs=["ok@example.com", "full@example.com", "late@example.com"],
        )
    assert set(refused) == {"full@example.com"}, refused


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The scenario's world, DSNs going into a Maildir, with mail sent and one bad callback."""
    folder = tmp_path_factory.mktemp("dashboard")
    path = folder / "dashboard.yaml"
    path.write_text(SCENARIO)
    world = World.from_scenario(load_scenario(path))
    world.bounce_intake = folder / "Maildir"
    with world:
        send_mail(world)
        deadline = time.monotonic() + 10
        while not world.journal.entries(Kind.DSN):
            if time.monotonic() > deadline:
                raise AssertionError("no DSN journaled within 10 s")
            time.sleep(0.05)
        # A legacy hardbounce with a millisecond ts: CT303, shown highlighted.
        httpx.post(
            world.clevertap.urls.bounce,
            json=[
                {
                    "event": "hardbounce",
                    "data": [{"e": "late@example.com", "ts": 1_700_000_000_123}],
                }
            ],
            timeout=10,
        )
        yield world


def _browser_paths() -> tuple[str, str] | str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(
            name for name, found in (("chromium", chromium), ("chromedriver", driver)) if not found
        )
        return (
            f"no {missing} on PATH: install Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; .ci/run does) to run the browser tests"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium through chromedriver; never downloads a browser or a driver."""
    paths = _browser_paths()
    if isinstance(paths, str):
        pytest.skip(paths)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


SCREENSHOTS = os.environ.get("HARNESS_DASHBOARD_SCREENSHOTS")
"""A folder to save the main views in (docs/img is where the committed ones live)."""


def screenshot(driver: object, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        # The whole page (up to a limit), not only the window.
        height = driver.execute_script("return document.documentElement.scrollHeight")  # type: ignore[attr-defined]
        driver.set_window_size(1280, min(max(height + 160, 900), 1800))  # type: ignore[attr-defined]
        driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))  # type: ignore[attr-defined]
        driver.set_window_size(1280, 900)  # type: ignore[attr-defined]
