"""Persistent shells in real microVMs (python fixture image), at hostd level (issue 7).

A shell outlives its clients: output that came while nobody was attached is in the scrollback
of the next attach; Ctrl-C reaches the job in front; a resize shows in `stty size`; the shell
and its scrollback survive hibernate and resume and are present in a fork; a flood is bounded
by the scrollback; opening, attaching, detaching and closing are audit entries.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from isorun_hostd.agent_channel import AgentError, ShellAttachment
from isorun_hostd.agent_channel.protocol import ShellResized, ShellWriter
from isorun_hostd.sandboxes import Runtime, Sandbox

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]

WAIT_S = 30.0


@pytest_asyncio.fixture(loop_scope="session")
async def sandbox(runtime: Runtime, python_ref: str) -> AsyncIterator[Sandbox]:
    sb = await runtime.create(python_ref)
    yield sb
    # After a hibernate and resume the sandbox of this id is another object, on another VM.
    if (current := runtime.get(sb.id)) is not None:
        await runtime.destroy(current)


async def read_until(attachment: ShellAttachment, pattern: str, timeout_s: float = WAIT_S) -> str:
    """Terminal output until ``pattern`` (a regex) matches it; fails after ``timeout_s``."""
    seen = b""

    async def collect() -> str:
        nonlocal seen
        async for item in attachment.events():
            if isinstance(item, bytes):
                seen += item
                text = seen.decode(errors="replace")
                if re.search(pattern, text):
                    return text
        raise AssertionError(f"the shell ended before {pattern!r}; output: {seen!r}")

    try:
        return await asyncio.wait_for(collect(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"no {pattern!r} in {timeout_s} s; output: {seen[-2000:]!r}") from None


async def test_a_shell_outlives_its_client_and_replays_what_came_meanwhile(
    sandbox: Sandbox,
) -> None:
    opened = await sandbox.open_shell(cols=100, rows=30)
    async with sandbox.attached_shell(opened.id, write=True) as first:
        assert first.writer and (first.cols, first.rows) == (100, 30)
        # The loop runs in its own sh, so Ctrl-C kills it for sure: bash's own loop loses a Ctrl-C
        # that lands while it forks the next command.
        await first.write(b"sh -c 'i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done'\n")
        await read_until(first, r"tick-2\b")
    # Nobody attached: the loop keeps printing into the scrollback.
    await asyncio.sleep(2)
    async with sandbox.attached_shell(opened.id) as reader:
        replay = await read_until(reader, r"tick-(1[0-9]|[2-9][0-9])\b")
        assert "tick-3" in replay, "output from while detached is missing"
        assert not reader.writer
    async with sandbox.attached_shell(opened.id, write=True) as again:
        await again.write(b"\x03")
        await again.write(b"echo stopped-$((6*7))\n")
        await read_until(again, r"stopped-42")
    shells = await sandbox.channel.list_shells()
    assert [(s.id, s.running) for s in shells] == [(opened.id, True)]
    await sandbox.close_shell(opened.id)
    assert await sandbox.channel.list_shells() == []
    kinds = [e.kind for e in sandbox.audit.entries(sandbox.id) if e.kind.startswith("shell.")]
    assert kinds[0] == "shell.open" and kinds[-1] == "shell.close"
    assert kinds.count("shell.attach") == kinds.count("shell.detach") == 3


async def test_resize_signals_writer_takeover_and_the_end(sandbox: Sandbox) -> None:
    opened = await sandbox.open_shell(["/bin/sh"], cols=80, rows=24)
    async with (
        sandbox.attached_shell(opened.id, write=True) as first,
        sandbox.attached_shell(opened.id, write=True) as second,
    ):
        events = []
        async for item in first.events():
            if isinstance(item, ShellWriter):
                events.append(item)
                break
        assert events and not first.writer, "the first writer was not told it lost the lease"
        await sandbox.channel.resize_shell(opened.id, cols=132, rows=43)
        await second.write(b"stty size\n")
        await read_until(second, r"43 132")
        assert (second.cols, second.rows) == (132, 43)
        async for item in first.events():
            if isinstance(item, ShellResized):
                assert (item.cols, item.rows) == (132, 43)
                break
        await second.write(b"sleep 300\n")
        await asyncio.sleep(0.5)
        await sandbox.channel.signal_shell(opened.id, 2)  # the job in front, as Ctrl-C would
        await second.write(b"echo after-$((1+1))\n")
        await read_until(second, r"after-2")
        await second.write(b"exit 7\n")
        async for _ in second.events():
            pass
        assert second.end is not None and second.end.exit_code == 7


async def test_a_shell_and_its_scrollback_survive_hibernate_and_fork(
    runtime: Runtime, sandbox: Sandbox
) -> None:
    opened = await sandbox.open_shell(["/bin/sh"])
    async with sandbox.attached_shell(opened.id, write=True) as shell:
        await shell.write(b"cd /tmp && export MARK=kept-$((40+2)) && echo ready\n")
        await read_until(shell, r"ready")
    await runtime.hibernate(sandbox)
    resumed = await runtime.resume(sandbox.id)
    clones = await runtime.fork(resumed, 1)
    try:
        for sb in (resumed, *clones):
            async with sb.attached_shell(opened.id, write=True) as shell:
                replay = await read_until(shell, r"ready")
                assert "export MARK" in replay
                await shell.write(b'echo "$MARK in $(pwd)"\n')
                await read_until(shell, r"kept-42 in /tmp")
    finally:
        for clone in clones:
            await runtime.destroy(clone)


async def test_a_flooding_shell_is_bounded_by_its_scrollback(sandbox: Sandbox) -> None:
    scrollback = 64 * 1024
    flood = "head -c 8000000 /dev/zero | tr '\\0' x; echo; echo flood-$((1+1)); sleep 600"
    opened = await sandbox.open_shell(["/bin/sh", "-c", flood], scrollback_bytes=scrollback)
    # A follower takes the flood as its credit allows (the host holds one window at most).
    async with sandbox.attached_shell(opened.id, scrollback=False) as follower:
        await read_until(follower, r"flood-2", timeout_s=180)
    async with sandbox.attached_shell(opened.id) as late:
        replay = await read_until(late, r"flood-2")
    # A late attach replays the scrollback, never the 8 MB that went through it.
    assert len(replay) <= scrollback
    assert replay.rstrip().endswith("flood-2")
    await sandbox.close_shell(opened.id)


async def test_bad_shell_requests_are_clear_errors(sandbox: Sandbox) -> None:
    with pytest.raises(AgentError) as missing:
        await sandbox.open_shell(["/no/such/shell"])
    assert missing.value.code == "not_found"
    with pytest.raises(AgentError) as unknown:
        await sandbox.channel.attach_shell("sh-000000000000")
    assert unknown.value.code == "not_found"
    assert await sandbox.channel.list_shells() == []
