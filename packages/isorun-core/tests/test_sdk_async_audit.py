"""`client.audit` with the async SDK over isorun.testing.FakeBackend; the twin of
test_sdk_audit.py."""

from __future__ import annotations

import isorun
import pytest
from isorun import AsyncClient, AsyncSandbox
from isorun.testing import FakeBackend


async def test_a_sandbox_s_entries_in_pages_also_after_its_delete() -> None:
    fake = FakeBackend()
    fake.script_exec(["echo", "hi"], stdout="hi\n")
    async with AsyncClient(transport=fake, api_key=fake.api_key) as client:
        sb = await AsyncSandbox.create(client=client)
        await sb.exec(["echo", "hi"])
        await sb.destroy()
        kinds = [e.kind async for e in client.audit.list(sb.id, page_size=2)]
        with pytest.raises(isorun.SandboxNotFound):
            [e async for e in client.audit.list("sb-none")]
    assert kinds == ["sandbox.create", "exec.start", "exec.end", "sandbox.destroy"]


async def test_verify_names_the_first_bad_entry() -> None:
    fake = FakeBackend()
    async with AsyncClient(transport=fake, api_key=fake.api_key) as client:
        await (await AsyncSandbox.create(client=client)).destroy()
        assert (await client.audit.verify()).ok
        fake.break_audit(2, "removed")
        broken = await client.audit.verify()
    assert broken.first_bad is not None
    node, bad = broken.first_bad
    assert (broken.ok, node, bad.seq, bad.reason) == (False, "fake", 2, "removed")
