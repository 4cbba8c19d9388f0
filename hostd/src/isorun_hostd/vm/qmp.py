"""The one module that speaks QMP, through ``qemu.qmp.QMPClient``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, QMPClient

from isorun_hostd.vm.errors import LaunchError

CONNECT_POLL_S = 0.005

# qemu.qmp logs a failed negotiation at ERROR; the caller reports it with QEMU's own words.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QMP:
    """A QMP session with one VM's QEMU."""

    def __init__(self, vm_id: str) -> None:
        self._vm_id = vm_id
        self._client = QMPClient(vm_id)

    async def connect(self, socket_path: Path, process: asyncio.subprocess.Process) -> None:
        """Connect once QEMU has created its socket.

        Raises:
            LaunchError: QEMU exited first.
        """
        while True:
            if process.returncode is not None:
                raise LaunchError(f"QEMU exited with status {process.returncode} before QMP was up")
            if socket_path.exists():
                # The socket file appears at bind(); until listen() a connect is refused.
                try:
                    await self._client.connect(str(socket_path))
                    return
                except ConnectError as exc:
                    if not isinstance(exc.exc, ConnectionRefusedError):
                        raise
                    self._client = QMPClient(self._vm_id)
            await asyncio.sleep(CONNECT_POLL_S)

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        return await self._client.execute(command, arguments)

    async def pass_fd(self, fd: int, name: str) -> None:
        """Hand QEMU a duplicate of ``fd`` under ``name`` (for ``fd:<name>`` URIs)."""
        self._client.send_fd_scm(fd)
        await self._client.execute("getfd", {"fdname": name})

    async def close(self) -> None:
        await self._client.disconnect()
