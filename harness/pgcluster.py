"""A throwaway PostgreSQL server for tests and benchmarks, from the installed binaries.

:class:`Cluster` runs ``initdb`` and ``pg_ctl`` of the PostgreSQL installed on the machine (the
Debian layout ``/usr/lib/postgresql/VERSION/bin``, or ``$HARNESS_PG_BIN``) in a fresh directory,
listening on 127.0.0.1 only, and removes it all at :meth:`Cluster.stop`. The server refuses to
run as root, so under root it runs as the ``postgres`` system user (``runuser -u postgres``),
in a directory that user owns.

Used by the test suite (``tests/postgres``) and ``bench/bench_scaleout.py``; not a way to run a
production database.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["Cluster", "ClusterUnavailable", "find_bin"]


class ClusterUnavailable(RuntimeError):
    """The PostgreSQL binaries (or the ``postgres`` user, under root) are not on this machine."""


def find_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``; :class:`ClusterUnavailable` if none."""
    env = os.environ.get("HARNESS_PG_BIN")
    candidates = [Path(env)] if env else []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name)
        )
        candidates += [p / "bin" for p in versions]
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).parent)
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    raise ClusterUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin, "
        "$HARNESS_PG_BIN or PATH; install the Debian package 'postgresql' (.ci/run does)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """One PostgreSQL server in a temporary directory, on 127.0.0.1 and a free port.

    ``with Cluster() as pg: pg.create_database("x")`` then connect to ``pg.url("x")``.
    """

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        self.bin = find_bin()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailable(
                    "running as root, and PostgreSQL refuses root: a 'postgres' system user is "
                    "needed to run the server (the Debian package 'postgresql' creates it)"
                ) from None
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "max_connections": "200",
            # Throwaway data: a crash of the machine may lose it, a crash of a client cannot.
            "fsync": "off",
            "full_page_writes": "off",
            **(settings or {}),
        }
        self.dir = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        self.data = self.dir / "data"
        self.sockets = self.dir / "sockets"
        self.port = 0
        self._started = False

    def _run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)

    def start(self) -> Cluster:
        self.sockets.mkdir()
        if self._as_root:
            for path in (self.dir, self.sockets):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        os.chmod(self.dir, 0o700)
        done = self._run(
            self.bin / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if done.returncode != 0:
            raise ClusterUnavailable(f"initdb failed: {done.stderr.strip() or done.stdout}")
        # A port picked here could be taken before the server binds it: try a few.
        last = ""
        for _ in range(5):
            self.port = _free_port()
            options = " ".join(
                f"-c {key}={value}"
                for key, value in {
                    **self.settings,
                    "port": str(self.port),
                    "unix_socket_directories": str(self.sockets),
                }.items()
            )
            done = self._run(
                self.bin / "pg_ctl",
                "-D",
                self.data,
                "-l",
                self.dir / "server.log",
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            )
            if done.returncode == 0:
                self._started = True
                return self
            log = self.dir / "server.log"
            last = log.read_text(errors="replace")[-2000:] if log.exists() else done.stderr
        raise ClusterUnavailable(f"PostgreSQL did not start: {last.strip()}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database *name* and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._started:
            self._run(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
            self._started = False
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
