"""isorun.testing.FakeBackend with the async SDK; the twin of test_sdk_fake_backend.py."""

from __future__ import annotations

import isorun
import pytest
from isorun import AsyncClient, AsyncSandbox, ExitEvent
from isorun.testing import FakeBackend


async def test_create_exec_files_and_destroy() -> None:
    fake = FakeBackend()
    fake.script_exec(["python", "-c", "'2**32'"], stdout="4294967296\n")
    sb = await AsyncSandbox.create(transport=fake, api_key=fake.api_key)
    r = await sb.run("python", "-c", "'2**32'")
    assert r.stdout == "4294967296\n"
    events = [e async for e in sb.exec_stream(["python", "-c", "'2**32'"])]
    assert isinstance(events[-1], ExitEvent)
    await sb.files.write("/tmp/a", b"x")
    assert await sb.files.read("/tmp/a") == b"x"
    await sb.destroy()
    assert fake.sandbox_ids == []


async def test_list_and_injected_failures() -> None:
    fake = FakeBackend()
    client = AsyncClient(transport=fake, api_key=fake.api_key, max_retries=0)
    async with client, AsyncSandbox.create(client=client, labels={"a": "b"}) as sb:
        found = [info.id async for info in AsyncSandbox.list(client=client, labels={"a": "b"})]
        assert found == [sb.id]
        fake.fail_next(409, "sandbox_not_running")
        with pytest.raises(isorun.SandboxStateError):
            await sb.exec("true")
    assert fake.sandbox_ids == []
