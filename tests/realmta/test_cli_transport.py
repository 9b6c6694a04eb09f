"""``harness serve --postfix-transport``, without Postfix: the file and the printed line."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from click.testing import CliRunner

from harness.cli import main
from tests.realmta.postfix import wait_until
from tests.realmta.test_worked_example import ROOT, Serve


def test_serve_writes_the_transport_map_and_prints_the_main_cf_line(tmp_path: Path) -> None:
    transport = tmp_path / "transport"
    process = Serve(
        [
            sys.executable,
            "-m",
            "harness",
            "serve",
            "scenarios/mailbox-full.yaml",
            "--postfix-transport",
            str(transport),
        ]
    )
    try:
        line = f"  transport_maps = texthash:{transport}"
        wait_until("the main.cf line", lambda: True if line in process.lines else None, 30)
        (mx,) = [m for m in process.lines if re.fullmatch(r"  127\.0\.0\.1:\d+  example\.com", m)]
        port = mx.split()[0].rpartition(":")[2]
        assert transport.read_text() == f"example.com smtp:[127.0.0.1]:{port}\n"
    finally:
        assert process.stop() == 0, process.lines
    assert ROOT.joinpath("scenarios/mailbox-full.yaml").exists()


def test_postfix_transport_needs_a_scenario(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--postfix-transport", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert "--postfix-transport only applies with a SCENARIO" in result.stderr


def test_an_unwritable_transport_path_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "transport"
    result = CliRunner().invoke(
        main,
        ["serve", str(ROOT / "scenarios/mailbox-full.yaml"), "--postfix-transport", str(target)],
    )
    assert result.exit_code == 2, result.output
    assert f"--postfix-transport: cannot write {target}" in result.stderr
