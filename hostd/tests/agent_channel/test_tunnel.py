import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from isorun_hostd.agent_channel import AgentChannel, AgentError, Channel, ProtocolViolation, Tunnel
from isorun_hostd.agent_channel.framing import Frame
from isorun_hostd.agent_channel.protocol import FrameType

from tests.framework.fake_agent import FakeAgent

REQUESTS: list[dict[str, Any]] = []
CANCELLED: list[int] = []


async def _handler(agent: FakeAgent, frame: Frame, req: dict[str, Any]) -> None:
    """A fake agent's connect: port 1 refuses, port 2 answers on the wrong channel, any other
    port echoes channel 0 back on channel 1 and ends after the host's EOF."""
    s = frame.stream
    REQUESTS.append(req)
    if req["port"] == 1:
        agent.send_json(FrameType.ERROR, s, {"code": "refused", "message": "connection refused"})
        return
    agent.send_json(FrameType.EVENT, s, {"event": "connected"})
    if req["port"] == 2:
        agent.send(FrameType.DATA, s, b"x", Channel.STDERR)
        return
    total = 0
    while True:
        f = await agent.frames.get()
        if f.stream != s or f.type == FrameType.CREDIT:
            continue
        if f.type == FrameType.DATA:
            total += len(f.payload)
            agent.send(FrameType.DATA, s, f.payload, Channel.STDOUT)
        elif f.type == FrameType.EOF:
            agent.send(FrameType.EOF, s, flags=Channel.STDOUT)
            agent.send_json(FrameType.REPLY, s, {"bytes_in": total, "bytes_out": total})
            return
        elif f.type == FrameType.CANCEL:
            CANCELLED.append(s)
            return


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[FakeAgent, AgentChannel]]:
    agent = FakeAgent(_handler)
    REQUESTS.clear()
    CANCELLED.clear()
    await agent.serve(tmp_path / "agent.sock")
    channel = await AgentChannel.connect(tmp_path / "agent.sock", timeout_s=5)
    try:
        yield agent, channel
    finally:
        await channel.aclose()
        await agent.close()


async def test_tunnel_carries_bytes_both_ways_then_ends(
    pair: tuple[FakeAgent, AgentChannel],
) -> None:
    _, channel = pair
    tunnel = await channel.connect_port(8000)
    assert isinstance(tunnel, Tunnel) and tunnel.port == 8000
    assert REQUESTS == [{"op": "connect", "port": 8000, "host": "127.0.0.1"}]
    await tunnel.write(b"ping")
    assert await tunnel.read() == b"ping"
    await tunnel.write_eof()
    assert await tunnel.read() == b""
    assert await tunnel.read() == b""
    end = await tunnel.wait()
    assert (end.bytes_in, end.bytes_out) == (4, 4)
    assert tunnel.end == end
    tunnel.close()  # after the end: nothing to cancel
    await asyncio.sleep(0.05)
    assert CANCELLED == []


async def test_wait_discards_unread_output(pair: tuple[FakeAgent, AgentChannel]) -> None:
    _, channel = pair
    tunnel = await channel.connect_port(9000, host="::1")
    await tunnel.write(b"unread")
    await tunnel.write_eof()
    assert (await asyncio.wait_for(tunnel.wait(), 5)).bytes_out == 6


async def test_refused_port_is_an_agent_error(pair: tuple[FakeAgent, AgentChannel]) -> None:
    _, channel = pair
    with pytest.raises(AgentError) as info:
        await channel.connect_port(1)
    assert info.value.code == "refused"
    assert channel._streams == {}


async def test_close_cancels_the_stream(pair: tuple[FakeAgent, AgentChannel]) -> None:
    _, channel = pair
    async with await channel.connect_port(8000) as tunnel:
        await tunnel.write(b"half")
        assert await tunnel.read() == b"half"
    for _ in range(100):
        if CANCELLED:
            break
        await asyncio.sleep(0.01)
    assert CANCELLED == [1]
    assert channel._streams == {}


async def test_output_on_another_channel_is_a_violation(
    pair: tuple[FakeAgent, AgentChannel],
) -> None:
    _, channel = pair
    tunnel = await channel.connect_port(2)
    with pytest.raises(ProtocolViolation, match="channel 2"):
        await tunnel.read()
    tunnel.close()
