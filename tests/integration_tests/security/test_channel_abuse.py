"""A hostile or runaway guest process cannot break the agent channel or starve other streams."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from isorun_hostd.agent_channel.protocol import Health
from isorun_hostd.sandboxes import Runtime, Sandbox

from tests.framework.registry import Registry
from tests.framework.run import run

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox(runtime: Runtime, registry: Registry) -> AsyncIterator[Sandbox]:
    sb = await runtime.create(registry.ref("busybox:1.0"))
    yield sb
    await runtime.destroy(sb)


async def test_guest_process_cannot_write_garbage_into_the_channel(sandbox: Sandbox) -> None:
    attempt = await run(
        sandbox,
        "for port in /dev/vport*; do head -c 100000 /dev/urandom > $port && echo WROTE; done; "
        "for fd in /proc/1/fd/*; do head -c 100000 /dev/urandom > $fd; done 2>/dev/null; true",
        timeout_s=30,
    )
    assert b"WROTE" not in attempt.stdout
    assert (await sandbox.channel.call("health", Health)).ok
    assert (await run(sandbox, "echo still fine")).stdout == b"still fine\n"


async def test_unread_flood_does_not_starve_other_streams(sandbox: Sandbox) -> None:
    flood = await sandbox.exec("cat /dev/zero", timeout_s=120)
    # Nobody reads the flood: it fills its window and blocks on its own pipe.
    await asyncio.sleep(1)
    started = time.monotonic()
    results = await asyncio.gather(*(run(sandbox, f"echo {i}") for i in range(5)))
    assert [r.stdout for r in results] == [b"%d\n" % i for i in range(5)]
    assert time.monotonic() - started < 30
    health = await sandbox.channel.call("health", Health)
    assert health.ok and health.processes >= 1
    await flood.signal(signal.SIGKILL)
    assert (await flood.wait()).signal == signal.SIGKILL


async def test_read_flood_is_delivered_in_full(sandbox: Sandbox) -> None:
    result = await run(sandbox, "head -c 20000000 /dev/zero", timeout_s=120)
    assert result.end.exit_code == 0
    assert len(result.stdout) == 20_000_000 and result.stdout.count(0) == 20_000_000


async def test_console_flood_is_bounded_on_the_host(sandbox: Sandbox) -> None:
    result = await run(sandbox, "head -c 200000 /dev/zero | tr '\\0' x > /dev/ttyS0", timeout_s=120)
    assert result.end.exit_code == 0
    console = sandbox.vm.console
    assert console.total_bytes >= 200_000
    assert len(console.tail(10_000)) <= 64 << 10
    assert not [p for p in sandbox.vm.paths.root.iterdir() if p.stat().st_size > 1 << 20]
