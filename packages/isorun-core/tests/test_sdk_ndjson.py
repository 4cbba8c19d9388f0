"""The exec stream decoder and collector (no I/O): cut chunks, base64, error lines, UTF-8."""

from __future__ import annotations

import json
from typing import Any

import isorun
import pytest
from isorun import ExitEvent, OutputEvent, StartEvent
from isorun._ndjson import ExecCollector, ExecStreamDecoder

EXIT = {"type": "exit", "exit_code": 3, "signal": None, "timed_out": False, "duration_ms": 9}


def body(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def decode(chunks: list[bytes]) -> list[Any]:
    decoder = ExecStreamDecoder(sandbox_id="sb-1")
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + list(decoder.close())


STREAM = body(
    {"type": "start", "pid": 1},
    {"type": "stdout", "data": "aGVsbG8="},
    {"type": "stderr", "data": "AAEC"},
    EXIT,
)
EVENTS = [
    StartEvent(pid=1),
    OutputEvent(stream="stdout", data=b"hello"),
    OutputEvent(stream="stderr", data=b"\x00\x01\x02"),
    ExitEvent(exit_code=3, duration_ms=9),
]


def test_whole_body_in_one_chunk() -> None:
    assert decode([STREAM]) == EVENTS


@pytest.mark.parametrize("size", [1, 2, 7, 33])
def test_chunks_cut_anywhere_give_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode(chunks) == EVENTS


def test_events_come_out_as_soon_as_their_line_is_complete() -> None:
    decoder = ExecStreamDecoder(sandbox_id="sb-1")
    first, rest = STREAM.split(b"\n", 1)
    assert list(decoder.feed(first)) == []
    assert list(decoder.feed(b"\n")) == [StartEvent(pid=1)]
    assert list(decoder.feed(rest)) == EVENTS[1:]


def test_last_line_without_newline_and_blank_lines() -> None:
    assert decode([b"\n" + STREAM.rstrip(b"\n")]) == EVENTS


def test_unknown_event_types_are_skipped() -> None:
    assert decode([body({"type": "start", "pid": 1}, {"type": "keepalive"}, EXIT)]) == [
        StartEvent(pid=1),
        ExitEvent(exit_code=3, duration_ms=9),
    ]


def test_error_line_after_start_raises_after_the_events_before_it() -> None:
    decoder = ExecStreamDecoder(sandbox_id="sb-1")
    error = {"type": "error", "code": "sandbox_not_running", "status": 409, "detail": "gone"}
    events = decoder.feed(body({"type": "start", "pid": 1}, error))
    assert next(events) == StartEvent(pid=1)
    with pytest.raises(isorun.SandboxStateError) as info:
        next(events)
    assert (info.value.sandbox_id, info.value.detail) == ("sb-1", "gone")


@pytest.mark.parametrize(
    "stream",
    [
        body({"type": "start", "pid": 1}),  # no exit
        b'{"type": "start", "pid": 1}\nnot json\n',
        body({"type": "stdout", "data": "***"}, EXIT),  # not base64
        body({"type": "start"}, EXIT),  # no pid
        body(EXIT, {"type": "stdout", "data": "AA=="}),  # after the exit
    ],
    ids=["no-exit", "not-json", "bad-base64", "no-pid", "after-exit"],
)
def test_malformed_streams_are_protocol_errors(stream: bytes) -> None:
    with pytest.raises(isorun.ProtocolError):
        decode([stream])


def test_collector_keeps_characters_cut_between_chunks_whole() -> None:
    seen: list[str] = []
    collector = ExecCollector(on_stdout=seen.append, on_stderr=None, sandbox_id="sb-1")
    encoded = "héllo €".encode()
    for i in range(len(encoded)):
        collector.add(OutputEvent(stream="stdout", data=encoded[i : i + 1]))
    collector.add(ExitEvent(exit_code=0))
    assert "".join(seen) == "héllo €"
    assert all("\ufffd" not in piece for piece in seen)
    result = collector.result()
    assert (result.stdout, result.exit_code, result.ok) == ("héllo €", 0, True)


def test_collector_flushes_a_dangling_byte_at_exit_as_replacement() -> None:
    collector = ExecCollector(on_stdout=None, on_stderr=None, sandbox_id=None)
    collector.add(OutputEvent(stream="stderr", data=b"ok\xc3"))
    collector.add(ExitEvent(exit_code=1, timed_out=True))
    result = collector.result()
    assert (result.stderr, result.timed_out) == ("ok\ufffd", True)
    with pytest.raises(isorun.ExecTimeout):
        result.check()


def test_collector_without_exit_is_a_protocol_error() -> None:
    collector = ExecCollector(on_stdout=None, on_stderr=None, sandbox_id=None)
    with pytest.raises(isorun.ProtocolError):
        collector.result()
