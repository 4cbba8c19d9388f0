"""Frame encoding and a resynchronising decoder for the agent channel.

Layout (spec/agent/protocol.md section 1), big-endian::

     0        4     5      6         8          12         16         20
     +--------+-----+------+---------+----------+----------+----------+---------+
     | "ISRN" | ver | type | flags   | stream   | length   | crc32    | payload |
     +--------+-----+------+---------+----------+----------+----------+---------+

The crc covers header bytes 0..15 and the payload.

The decoder has two modes. Before the session handshake it *scans*: anything that does not check
out (bad magic, version, length, checksum) is noise left over from an earlier connection, so it
drops one byte and looks for the next magic. Scanning is bounded in two ways so a hostile guest
cannot turn it into CPU work on the host: a candidate frame may claim at most
``SCAN_MAX_PAYLOAD_BYTES`` (the handshake reply is small), and at most ``SCAN_BUDGET_BYTES`` may be
skipped. Once the handshake is done the decoder is *strict*: the agent owns the port exclusively
and writes whole frames, so any invalid frame means a broken or hostile agent, and the channel
is closed.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from isorun_hostd.agent_channel.protocol import (
    HEADER_BYTES,
    MAGIC,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
)

SCAN_MAX_PAYLOAD_BYTES = 4096
SCAN_BUDGET_BYTES = 1 << 20

_HEADER = struct.Struct(">4sBBHIII")
_PREFIX = struct.Struct(">4sBBHII")


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    type: int
    flags: int
    stream: int
    payload: bytes


def encode(frame_type: int, stream: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """Serialise one frame.

    Raises:
        ValueError: the payload is larger than the protocol allows.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    prefix = _PREFIX.pack(MAGIC, PROTOCOL_VERSION, frame_type, flags, stream, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(prefix))
    return prefix + struct.pack(">I", crc) + payload


class FramingError(Exception):
    """The byte stream from the agent is not a valid frame sequence."""


class Decoder:
    """Turns a byte stream into frames; see the module docstring for the two modes."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped_bytes = 0
        self.strict = False

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Frame | None:
        buf = self._buf
        while True:
            start = buf.find(MAGIC)
            if start < 0:
                # Keep a tail that could be the start of a magic split across reads.
                keep = len(MAGIC) - 1
                self._drop(max(0, len(buf) - keep))
                return None
            self._drop(start)
            if len(buf) < HEADER_BYTES:
                return None
            _, version, ftype, flags, stream, length, crc = _HEADER.unpack_from(buf)
            max_length = MAX_PAYLOAD_BYTES if self.strict else SCAN_MAX_PAYLOAD_BYTES
            if version != PROTOCOL_VERSION or length > max_length:
                self._reject(f"bad frame header (version {version}, length {length})")
                continue
            end = HEADER_BYTES + length
            if len(buf) < end:
                return None
            payload = bytes(buf[HEADER_BYTES:end])
            if zlib.crc32(payload, zlib.crc32(buf[:16])) != crc:
                self._reject("frame checksum mismatch")
                continue
            del buf[:end]
            return Frame(ftype, flags, stream, payload)

    def _reject(self, why: str) -> None:
        if self.strict:
            raise FramingError(why)
        self._drop(1)

    def _drop(self, count: int) -> None:
        if not count:
            return
        if self.strict:
            raise FramingError(f"{count} bytes of noise between frames")
        del self._buf[:count]
        self.skipped_bytes += count
        if self.skipped_bytes > SCAN_BUDGET_BYTES:
            raise FramingError(f"no valid frame in {self.skipped_bytes} bytes")
