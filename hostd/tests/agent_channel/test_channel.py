import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from isorun_hostd.agent_channel import (
    AgentChannel,
    AgentError,
    Channel,
    ChannelClosed,
    ExecRequest,
    InputRefused,
    ProtocolViolation,
)
from isorun_hostd.agent_channel.framing import Frame
from isorun_hostd.agent_channel.protocol import INITIAL_WINDOW_BYTES, FrameType, Health

from tests.framework.fake_agent import FakeAgent, Handler

END = {"exit_code": 0, "signal": None, "timed_out": False, "duration_ms": 3}


async def _pair(
    tmp_path: Path, handler: Handler, stale: bytes = b""
) -> AsyncIterator[tuple[FakeAgent, AgentChannel]]:
    agent = FakeAgent(handler, stale=stale)
    await agent.serve(tmp_path / "agent.sock")
    channel = await AgentChannel.connect(tmp_path / "agent.sock", timeout_s=5)
    try:
        yield agent, channel
    finally:
        await channel.aclose()
        await agent.close()


@pytest.fixture
async def exec_pair(tmp_path: Path) -> AsyncIterator[tuple[FakeAgent, AgentChannel]]:
    async def handler(agent: FakeAgent, frame: Frame, req: dict[str, Any]) -> None:
        s = frame.stream
        if req["op"] == "health":
            agent.send_json(FrameType.REPLY, s, {"ok": True, "uptime_ms": 5, "processes": 0})
        elif req["op"] == "exec" and req.get("argv") == ["missing"]:
            agent.send_json(
                FrameType.ERROR, s, {"code": "not_found", "message": "no such file: missing"}
            )
        elif req["op"] == "exec":
            agent.send_json(FrameType.EVENT, s, {"event": "start", "pid": 42})
            agent.send(FrameType.DATA, s, b"out", Channel.STDOUT)
            agent.send(FrameType.DATA, s, b"err", Channel.STDERR)
            agent.send(FrameType.EOF, s, flags=Channel.STDOUT)
            agent.send(FrameType.EOF, s, flags=Channel.STDERR)
            agent.send_json(
                FrameType.REPLY, s, END if req["argv"] != ["bad"] else {**END, "exit_code": 999}
            )

    async for pair in _pair(tmp_path, handler, stale=b"\x00garbage ISRN\x01 stale half frame"):
        yield pair


async def test_handshake_skips_stale_bytes_and_foreign_sessions(
    exec_pair: tuple[FakeAgent, AgentChannel],
) -> None:
    _, channel = exec_pair
    assert channel.agent_version == "fake-1"
    health = await channel.call("health", Health)
    assert health.ok and health.uptime_ms == 5


async def test_exec_streams_output_then_end(exec_pair: tuple[FakeAgent, AgentChannel]) -> None:
    _, channel = exec_pair
    process = await channel.exec(ExecRequest(argv=["echo"]))
    assert process.pid == 42
    chunks = [(c.channel, c.data) async for c in process.output()]
    assert chunks == [(Channel.STDOUT, b"out"), (Channel.STDERR, b"err")]
    end = await process.wait()
    assert (end.exit_code, end.signal, end.timed_out) == (0, None, False)


async def test_agent_errors_and_invalid_replies(exec_pair: tuple[FakeAgent, AgentChannel]) -> None:
    _, channel = exec_pair
    with pytest.raises(AgentError) as info:
        await channel.exec(ExecRequest(argv=["missing"]))
    assert info.value.code == "not_found"
    process = await channel.exec(ExecRequest(argv=["bad"]))
    with pytest.raises(ProtocolViolation, match="ExecEnd"):
        await process.wait()
    assert (await channel.call("health", Health)).ok


async def test_closed_socket_fails_pending_streams_fast(tmp_path: Path) -> None:
    async def handler(agent: FakeAgent, frame: Frame, req: dict[str, Any]) -> None:
        agent.send_json(FrameType.EVENT, frame.stream, {"event": "start", "pid": 7})
        await asyncio.sleep(0.05)
        await agent.close()

    async for _, channel in _pair(tmp_path, handler):
        process = await channel.exec(ExecRequest(shell="sleep 100"))
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(process.wait(), 1)
        with pytest.raises(ChannelClosed):
            await channel.call("health", Health)


async def test_credit_is_returned_only_as_output_is_consumed(tmp_path: Path) -> None:
    window = INITIAL_WINDOW_BYTES

    async def handler(agent: FakeAgent, frame: Frame, req: dict[str, Any]) -> None:
        agent.send_json(FrameType.EVENT, frame.stream, {"event": "start", "pid": 9})
        for _ in range(window // 65536):
            agent.send(FrameType.DATA, frame.stream, b"x" * 65536, Channel.STDOUT)

    async for agent, channel in _pair(tmp_path, handler):
        process = await channel.exec(ExecRequest(argv=["yes"]))
        await asyncio.sleep(0.1)
        assert agent.credits == {}
        output = process.output()
        for _ in range(window // 65536 // 2):
            await anext(output)
        await asyncio.wait_for(agent.frames.get(), 1)
        assert agent.credits == {1: window // 2}


async def test_data_beyond_credit_fails_only_that_stream(tmp_path: Path) -> None:
    async def handler(agent: FakeAgent, frame: Frame, req: dict[str, Any]) -> None:
        if req["op"] == "health":
            agent.send_json(
                FrameType.REPLY, frame.stream, {"ok": True, "uptime_ms": 1, "processes": 1}
            )
            return
        agent.send_json(FrameType.EVENT, frame.stream, {"event": "start", "pid": 9})
        for _ in range(INITIAL_WINDOW_BYTES // 65536 + 1):
            agent.send(FrameType.DATA, frame.stream, b"x" * 65536, Channel.STDOUT)

    async for agent, channel in _pair(tmp_path, handler):
        process = await channel.exec(ExecRequest(argv=["flood"]))
        await asyncio.sleep(0.2)  # all of the flood arrives before anything is consumed
        with pytest.raises(ProtocolViolation, match="beyond its credit"):
            await process.wait()
        cancel = await asyncio.wait_for(agent.frames.get(), 1)
        assert cancel.type == FrameType.CANCEL
        assert (await channel.call("health", Health)).ok


async def test_write_waits_for_the_agents_credit(tmp_path: Path) -> None:
    received = bytearray()
    granted = asyncio.Event()

    async def handler(agent: FakeAgent, frame: Frame, req: dict[str, Any]) -> None:
        while True:
            data = await agent.frames.get()
            if data.type == FrameType.EOF:
                agent.send_json(FrameType.REPLY, frame.stream, {"bytes": len(received)})
                return
            received.extend(data.payload)
            if len(received) == INITIAL_WINDOW_BYTES:
                await asyncio.sleep(0.2)
                granted.set()
                agent.send(FrameType.CREDIT, frame.stream, struct.pack(">I", INITIAL_WINDOW_BYTES))

    payload = bytes(range(256)) * (INITIAL_WINDOW_BYTES // 128)
    async for _, channel in _pair(tmp_path, handler):
        written = await channel.write_file("/tmp/f", payload)
        assert granted.is_set()
        assert written == len(payload) and bytes(received) == payload


async def test_write_refused_early_raises_the_agents_error_not_a_hang(tmp_path: Path) -> None:
    async def handler(agent: FakeAgent, frame: Frame, req: dict[str, Any]) -> None:
        await asyncio.sleep(0.1)  # the host has used its whole window and waits for credit
        message = {"code": "not_found", "message": "/nope: no such file or directory"}
        agent.send_json(FrameType.ERROR, frame.stream, message)

    async for _, channel in _pair(tmp_path, handler):
        with pytest.raises(AgentError) as info:
            await asyncio.wait_for(
                channel.write_file("/nope/f", b"x" * (3 * INITIAL_WINDOW_BYTES)), 2
            )
        assert info.value.code == "not_found"


async def test_stdin_after_exit_is_refused(exec_pair: tuple[FakeAgent, AgentChannel]) -> None:
    _, channel = exec_pair
    process = await channel.exec(ExecRequest(argv=["echo"], stdin=True))
    await process.wait()
    with pytest.raises(InputRefused):
        await process.write_stdin(b"too late")


async def test_control_frame_flood_fails_only_that_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(agent: FakeAgent, frame: Frame, req: dict[str, Any]) -> None:
        if req["op"] == "health":
            agent.send_json(
                FrameType.REPLY, frame.stream, {"ok": True, "uptime_ms": 1, "processes": 0}
            )
            return
        agent.send_json(FrameType.EVENT, frame.stream, {"event": "start", "pid": 3})
        for _ in range(10):
            agent.send_json(FrameType.EVENT, frame.stream, {"event": "noise", "pad": "x" * 900_000})

    async for _, channel in _pair(tmp_path, handler):
        process = await channel.exec(ExecRequest(argv=["x"]))
        await asyncio.sleep(0.3)
        assert "flooded the stream" in caplog.text  # dropped at ~4 MiB, before anyone reads
        with pytest.raises(ProtocolViolation):
            await process.wait()
        assert (await channel.call("health", Health)).ok
