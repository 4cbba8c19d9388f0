"""The guest's serial console, kept as a bounded ring in hostd's memory.

QEMU writes the console to its stdout, a pipe hostd drains. Writing it to a file would let root
in the guest fill the host's disk by writing to /dev/ttyS0; the ring keeps the last
``CONSOLE_RING_BYTES``, which is what error messages quote when a boot fails.
"""

from __future__ import annotations

import asyncio

CONSOLE_RING_BYTES = 64 << 10
_READ_BYTES = 16 << 10


class ConsoleRing:
    """The tail of a console stream."""

    def __init__(self, limit_bytes: int = CONSOLE_RING_BYTES) -> None:
        self._limit = limit_bytes
        self._buf = bytearray()
        self.total_bytes = 0

    def feed(self, data: bytes) -> None:
        self.total_bytes += len(data)
        self._buf += data
        excess = len(self._buf) - self._limit
        if excess > 0:
            del self._buf[:excess]

    def tail(self, lines: int = 15) -> str:
        text = self._buf.decode(errors="replace").strip()
        return "\n".join(text.splitlines()[-lines:])

    async def drain(self, stream: asyncio.StreamReader) -> None:
        """Read ``stream`` into the ring until it closes (QEMU exited)."""
        while data := await stream.read(_READ_BYTES):
            self.feed(data)
