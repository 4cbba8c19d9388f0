"""The `isorun` SDK against the real backend over a loopback socket: SDK -> backend -> hostd ->
VM, on SQLite and on PostgreSQL. The API tests drive raw HTTP; these prove the client a user
installs works end to end: create, exec (buffered and streamed), files, errors, lifecycle."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from api_support import BOTH_ENGINES
from isorun import (
    AsyncSandbox,
    AuthenticationError,
    ExitEvent,
    ImageRejected,
    InvalidRequest,
    OutputEvent,
    SandboxNotFound,
    StartEvent,
)

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="session"), BOTH_ENGINES]

BIG_BYTES = 50 * 1000 * 1000


@pytest.fixture
def api_url(http: httpx.AsyncClient) -> str:
    return str(http.base_url)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox(http: httpx.AsyncClient, key: str) -> AsyncIterator[AsyncSandbox]:
    sb = await AsyncSandbox.create(
        "python", memory_mib=512, api_key=key, api_url=str(http.base_url)
    )
    yield sb
    await sb.destroy()


async def test_the_landing_page_run(sandbox: AsyncSandbox) -> None:
    result = await sandbox.run("python", "-c", "print(2**32)")
    assert (result.exit_code, result.stdout) == (0, "4294967296\n")
    failed = await sandbox.exec("echo oops >&2; exit 3")
    assert (failed.exit_code, failed.stderr) == (3, "oops\n")


async def test_streaming_exec_delivers_events_in_order(sandbox: AsyncSandbox) -> None:
    seen: list[str] = []
    result = await sandbox.exec(
        "for i in 1 2 3; do echo line-$i; sleep 0.2; done", on_stdout=seen.append
    )
    assert "".join(seen) == "line-1\nline-2\nline-3\n" and result.exit_code == 0
    events = [e async for e in sandbox.exec_stream(["python3", "-c", "print('x')"])]
    assert isinstance(events[0], StartEvent) and isinstance(events[-1], ExitEvent)
    assert b"".join(e.data for e in events if isinstance(e, OutputEvent)) == b"x\n"


async def test_fifty_megabytes_round_trip(sandbox: AsyncSandbox) -> None:
    data = os.urandom(BIG_BYTES)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, BIG_BYTES, 1 << 20):
            yield data[start : start + (1 << 20)]

    written = await sandbox.files.write("/tmp/big.bin", chunks())
    assert written.size_bytes == BIG_BYTES
    back = await sandbox.files.read("/tmp/big.bin")
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    await sandbox.files.remove("/tmp/big.bin")
    assert not await sandbox.files.exists("/tmp/big.bin")


async def test_bad_input_maps_to_typed_errors(
    api_url: str, key: str, other_key: str, sandbox: AsyncSandbox
) -> None:
    with pytest.raises(ImageRejected):
        await AsyncSandbox.create("python:latest", api_key=key, api_url=api_url)
    with pytest.raises(InvalidRequest):
        await AsyncSandbox.create("python", vcpus=10_000, api_key=key, api_url=api_url)
    with pytest.raises(AuthenticationError):
        await AsyncSandbox.connect(sandbox.id, api_key="isr_" + "x" * 32, api_url=api_url)
    with pytest.raises(SandboxNotFound):
        await AsyncSandbox.connect(sandbox.id, api_key=other_key, api_url=api_url)


async def test_lifecycle_keep_alive_then_destroy(api_url: str, key: str) -> None:
    sb = await AsyncSandbox.create("busybox", timeout_s=60, api_key=key, api_url=api_url)
    first_expiry = sb.info.expires_at
    extended = await sb.keep_alive(600)
    assert extended.expires_at > first_expiry
    await sb.destroy()
    with pytest.raises(SandboxNotFound):
        await AsyncSandbox.connect(sb.id, api_key=key, api_url=api_url)
