"""Processes in a real microVM booted from the python fixture image."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from isorun_hostd.agent_channel import AgentError, Channel
from isorun_hostd.agent_channel.protocol import ProcessList
from isorun_hostd.sandboxes import Runtime, Sandbox

from tests.framework.run import collect, run

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox(runtime: Runtime, python_ref: str) -> AsyncIterator[Sandbox]:
    sb = await runtime.create(python_ref)
    yield sb
    await runtime.destroy(sb)


async def test_python_prints_two_to_the_32(sandbox: Sandbox) -> None:
    result = await run(sandbox, ["python3", "-c", "print(2**32)"])
    assert result.stdout == b"4294967296\n"
    assert (result.end.exit_code, result.end.signal, result.end.timed_out) == (0, None, False)


async def test_stdout_and_stderr_stay_apart(sandbox: Sandbox) -> None:
    result = await run(sandbox, "echo out; echo err >&2; exit 3")
    assert (result.stdout, result.stderr, result.end.exit_code) == (b"out\n", b"err\n", 3)


async def test_death_by_signal_is_reported_as_such(sandbox: Sandbox) -> None:
    result = await run(sandbox, "kill -SEGV $$")
    assert (result.end.exit_code, result.end.signal) == (None, signal.SIGSEGV)


async def test_timeout_kills_the_process_group(sandbox: Sandbox) -> None:
    result = await run(sandbox, "sleep 60 & sleep 60; echo never", timeout_s=1)
    assert result.end.timed_out
    assert result.end.signal == signal.SIGKILL
    assert b"never" not in result.stdout
    listing = await sandbox.channel.call("ps", ProcessList)
    assert not [p for p in listing.processes if p.running]


async def test_twenty_concurrent_execs_get_their_own_output(sandbox: Sandbox) -> None:
    async def one(i: int) -> tuple[int, bytes, bytes]:
        result = await run(
            sandbox, f"for n in 1 2 3; do echo out-{i}-$n; echo err-{i}-$n >&2; done"
        )
        return i, result.stdout, result.stderr

    results = await asyncio.gather(*(one(i) for i in range(20)))
    for i, out, err in results:
        assert out == b"".join(b"out-%d-%d\n" % (i, n) for n in (1, 2, 3))
        assert err == b"".join(b"err-%d-%d\n" % (i, n) for n in (1, 2, 3))


async def test_output_streams_while_the_process_runs(sandbox: Sandbox) -> None:
    script = "import sys,time; sys.stdout.write('x'*(1<<20)); sys.stdout.flush(); time.sleep(60)"
    process = await sandbox.exec(["python3", "-c", script], timeout_s=120)
    received = 0
    async for chunk in process.output():
        assert chunk.channel == Channel.STDOUT
        received += len(chunk.data)
        if received >= 1 << 20:
            break
    assert received == 1 << 20
    listing = await sandbox.channel.call("ps", ProcessList)
    assert [p.running for p in listing.processes if p.pid == process.pid] == [True]
    await process.signal(signal.SIGTERM)
    end = await process.wait()
    assert end.signal == signal.SIGTERM


async def test_stdin_is_piped(sandbox: Sandbox) -> None:
    process = await sandbox.exec(
        ["python3", "-c", "import sys; print(sys.stdin.read()[::-1])"], stdin=True
    )
    await process.write_stdin(b"isorun")
    await process.close_stdin()
    result = await collect(process)
    assert result.stdout == b"nurosi\n"


async def test_env_cwd_and_user(sandbox: Sandbox) -> None:
    result = await run(
        sandbox, 'echo "$GREETING"; pwd; id -u', env={"GREETING": "hi"}, cwd="/tmp", user="nobody"
    )
    assert result.stdout == b"hi\n/tmp\n65534\n"
    path = await run(sandbox, 'echo "$PATH"')
    assert b"/usr/bin" in path.stdout


async def test_missing_program_is_a_clear_error(sandbox: Sandbox) -> None:
    with pytest.raises(AgentError) as info:
        await sandbox.exec(["/no/such/program"])
    assert info.value.code == "not_found"
    assert "/no/such/program" in info.value.message


async def test_hostname_and_writable_overlay(sandbox: Sandbox) -> None:
    result = await run(
        sandbox, "hostname; echo data > /etc/isorun-test && cat /etc/isorun-test; mount"
    )
    lines = result.text.splitlines()
    assert lines[0] == sandbox.id
    assert lines[1] == "data"
    assert any(" / " in line and "overlay" in line for line in lines[2:])


async def test_processes_survive_a_reconnect_and_can_be_attached(sandbox: Sandbox) -> None:
    request = sandbox.exec_request("echo before; sleep 2; echo after; exit 5")
    process = await sandbox.channel.exec(request.model_copy(update={"tag": "survivor"}))
    first = await anext(process.output())
    assert first.data == b"before\n"
    channel = await sandbox.vm.reconnect(timeout_s=30)
    attached = await channel.attach(tag="survivor")
    assert attached.pid == process.pid
    result = await collect(attached)
    assert result.stdout.endswith(b"after\n")
    assert result.end.exit_code == 5
    assert (await run(sandbox, "echo fresh")).stdout == b"fresh\n"


async def test_orphans_are_reaped(sandbox: Sandbox) -> None:
    await run(sandbox, "for i in 1 2 3 4 5; do (sleep 0.2 &) ; done")
    await asyncio.sleep(1.5)
    states = await run(sandbox, "cat /proc/[0-9]*/stat 2>/dev/null | awk '{print $3}'")
    assert "Z" not in states.text.split()


async def test_vcpus_and_memory_are_what_was_asked(runtime: Runtime, python_ref: str) -> None:
    sb = await runtime.create(python_ref, vcpus=2, mem_mib=512)
    try:
        result = await run(sb, "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo")
        cpus, mem_kib = result.text.split()
        assert cpus == "2"
        assert 400 * 1024 < int(mem_kib) <= 512 * 1024
    finally:
        await runtime.destroy(sb)
