"""`sb.shells` on `AsyncSandbox` against the real API: the async twin of test_sdk_shells.py."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator

import pytest
from isorun import AsyncSandbox, NotFound, Sandbox, ShellExit, TerminalClosed

from tests.framework.isorun_up import Up

pytestmark = pytest.mark.vm

WAIT_S = 30.0
PROMPT = re.compile(rb"[#$] $")


@pytest.fixture(scope="module")
def sandbox_id(up: Up) -> Iterator[str]:
    # Made by the sync SDK so that it outlives each test's event loop.
    with Sandbox("python", memory_mib=512, api_url=up.url, api_key=up.key) as sandbox:
        yield sandbox.id


async def connect(up: Up, sandbox_id: str) -> AsyncSandbox:
    return await AsyncSandbox.connect(sandbox_id, api_url=up.url, api_key=up.key)


async def test_a_shell_outlives_its_client_and_replays_what_came_meanwhile(
    up: Up, sandbox_id: str
) -> None:
    sb = await connect(up, sandbox_id)
    shell = await sb.shells.create(cols=100, rows=30)
    async with sb.shells.attach(shell.id, write=True) as term:
        assert term.writer and term.pid == shell.pid
        await term.read_until(PROMPT, timeout=WAIT_S)
        await term.send(
            b"for i in $(seq 1 10); do echo tick-$i; sleep 0.2; done; echo loop-$((6*7))\n"
        )
        await term.read_until(b"tick-2", timeout=WAIT_S)
    await asyncio.sleep(3)
    term = await sb.shells.attach(shell.id, write=True)
    try:
        replayed = await term.read_until("loop-42", timeout=WAIT_S)
        assert b"tick-1\r\n" in replayed and b"tick-10\r\n" in replayed

        await term.send("sleep 1000\n")
        await asyncio.sleep(0.5)
        await term.send("\x03")
        await term.send("echo stopped-$((6*7))\n")
        await term.read_until("stopped-42", timeout=WAIT_S)

        await sb.shells.resize(shell.id, 120, 40)
        await term.send("stty size\n")
        await term.read_until("40 120", timeout=WAIT_S)
        assert (term.cols, term.rows) == (120, 40)

        await term.send("exit 3\n")
        output = b"".join([chunk async for chunk in term])
        assert isinstance(term.exit, ShellExit) and term.exit.exit_code == 3, output
        with pytest.raises(TerminalClosed):
            await term.recv(timeout=1)
    finally:
        await term.close()
    [ended] = [s for s in await sb.shells.list() if s.id == shell.id]
    assert (ended.running, ended.exit_code) == (False, 3)
    await sb.aclose()


async def test_signal_list_and_close(up: Up, sandbox_id: str) -> None:
    sb = await connect(up, sandbox_id)
    sleeper = await sb.shells.create(["sleep", "1000"])
    async with sb.shells.attach(sleeper.id, write=True) as term:
        await term.signal(signal.SIGTERM, target="shell")
        output = b"".join([chunk async for chunk in term])
    assert term.exit is not None and term.exit.signal == signal.SIGTERM, output

    other = await sb.shells.create()
    assert other.id in {s.id for s in await sb.shells.list()}
    await sb.shells.close(other.id)
    with pytest.raises(NotFound):
        await sb.shells.attach(other.id)
    await sb.aclose()
