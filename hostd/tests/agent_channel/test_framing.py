import os
import zlib

import pytest
from isorun_hostd.agent_channel.framing import (
    SCAN_BUDGET_BYTES,
    Decoder,
    Frame,
    FramingError,
    encode,
)
from isorun_hostd.agent_channel.protocol import MAX_PAYLOAD_BYTES, FrameType


def test_round_trip_split_at_every_byte() -> None:
    wire = encode(FrameType.DATA, 7, b"hello", flags=2) + encode(FrameType.EOF, 7, flags=2)
    decoder = Decoder()
    frames = [f for i in range(len(wire)) for f in decoder.feed(wire[i : i + 1])]
    assert frames == [Frame(FrameType.DATA, 2, 7, b"hello"), Frame(FrameType.EOF, 2, 7, b"")]
    assert decoder.skipped_bytes == 0


def test_crc_covers_header_and_payload() -> None:
    wire = encode(FrameType.REPLY, 1, b"{}")
    assert int.from_bytes(wire[16:20], "big") == zlib.crc32(wire[:16] + b"{}")


def test_scan_mode_skips_garbage_between_frames() -> None:
    good = encode(FrameType.REPLY, 0, b'{"ok": true}')
    corrupt = bytearray(encode(FrameType.REPLY, 3, b"xx"))
    corrupt[-1] ^= 0xFF
    noise = os.urandom(5000) + b"ISRN" + b"\x01\x05" + os.urandom(10)
    decoder = Decoder()
    frames = decoder.feed(noise + bytes(corrupt) + good + b"ISR")
    assert frames == [Frame(FrameType.REPLY, 0, 0, b'{"ok": true}')]
    assert decoder.skipped_bytes >= len(noise)


def test_scan_mode_gives_up_after_budget() -> None:
    decoder = Decoder()
    with pytest.raises(FramingError, match="no valid frame"):
        for _ in range(SCAN_BUDGET_BYTES // 65536 + 2):
            decoder.feed(b"\0" * 65536)


def test_strict_mode_rejects_noise_and_bad_frames() -> None:
    decoder = Decoder()
    decoder.strict = True
    assert decoder.feed(encode(FrameType.DATA, 1, b"a")) == [Frame(FrameType.DATA, 0, 1, b"a")]
    with pytest.raises(FramingError, match="noise"):
        decoder.feed(b"junk" + encode(FrameType.DATA, 1, b"a"))
    decoder = Decoder()
    decoder.strict = True
    bad = bytearray(encode(FrameType.DATA, 1, b"abc"))
    bad[-2] ^= 1
    with pytest.raises(FramingError, match="checksum"):
        decoder.feed(bytes(bad))


def test_oversized_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode(FrameType.DATA, 1, b"\0" * (MAX_PAYLOAD_BYTES + 1))
    header = bytearray(encode(FrameType.DATA, 1, b""))
    header[12:16] = (MAX_PAYLOAD_BYTES + 1).to_bytes(4, "big")
    decoder = Decoder()
    decoder.strict = True
    with pytest.raises(FramingError, match="length"):
        decoder.feed(bytes(header))
