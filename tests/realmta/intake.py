"""Where Postfix's DSNs land: an SMTP listener on 127.0.0.1 that writes every message to a Maildir.

aiosmtpd's own :class:`~aiosmtpd.handlers.Mailbox` handler does the writing; the listener binds
port 0 in a :class:`harness._loop.LoopThread` (aiosmtpd's Controller cannot use port 0).
"""

from __future__ import annotations

import asyncio
import mailbox
from email.message import Message
from pathlib import Path

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP

from harness._loop import LoopThread

__all__ = ["MaildirIntake"]


class MaildirIntake:
    """``with MaildirIntake(path) as intake:`` ... ``intake.port``, ``intake.messages()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = 0
        self._thread = LoopThread(name="realmta-intake")
        self._server: asyncio.Server | None = None

    def __enter__(self) -> MaildirIntake:
        self._thread.start()
        self._server = self._thread.run(self._start(), timeout=10)
        return self

    async def _start(self) -> asyncio.Server:
        handler = Mailbox(str(self.path))
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="intake.brand.test"), "127.0.0.1", 0
        )
        self.port = int(server.sockets[0].getsockname()[1])
        return server

    def __exit__(self, *exc_info: object) -> None:
        server = self._server
        if server is not None:
            self._thread.run(_close(server), timeout=10)
        self._thread.stop()

    def messages(self) -> list[Message]:
        """Every message received so far."""
        box = mailbox.Maildir(self.path, create=True)
        try:
            return list(box)  # iterating a mailbox gives its messages
        finally:
            box.close()


async def _close(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()
