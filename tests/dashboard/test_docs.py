"""docs/dashboard.md and the README show screenshots that exist, and name the real routes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_screenshot_shown_exists() -> None:
    for page in (ROOT / "README.md", ROOT / "docs" / "dashboard.md"):
        images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text(encoding="utf-8"))
        assert images, page
        for image in images:
            assert (page.parent / image).is_file(), f"{page.name} shows {image}, which is missing"


def test_the_pages_documented_are_served() -> None:
    import httpx

    from harness.clevertap.server import CleverTapServer

    doc = (ROOT / "docs" / "dashboard.md").read_text(encoding="utf-8")
    pages = {
        "/recipient/ADDRESS": "/recipient/a@example.com",
        "/session/ID": "/session/mx-1",
        "/checks": "/checks",
        "/login": "/login",
    }
    with CleverTapServer() as server:
        for documented, real in pages.items():
            assert documented in doc
            assert httpx.get(server.url + real, timeout=10).status_code == 200, real
