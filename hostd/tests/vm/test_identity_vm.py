"""The identity op in a real microVM booted from the busybox fixture image (protocol.md 5.1.1)."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from isorun_hostd.agent_channel import AgentError, IdentityReply
from isorun_hostd.config import Settings
from isorun_hostd.sandboxes import Runtime, Sandbox
from isorun_hostd.vm.identity import fresh_identity

from tests.framework.registry import Registry
from tests.framework.run import run
from tests.host_tools.leaks import qemu_pids

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="module")]

DAY_NS = 86_400 * 10**9
# The guest's `date` is read a round trip after the clock was set (TCG is slow to exec).
CLOCK_SLACK_S = 5


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Sandbox]:
    root = tmp_path_factory.mktemp("identity")
    runtime = Runtime(Settings(state_dir=root / "state", run_dir=root / "run"))
    await runtime.start()
    try:
        sb = await runtime.create(registry.ref("busybox:1.0"))
        yield sb
    finally:
        await runtime.aclose()
        assert not qemu_pids(root / "run"), "a QEMU process outlived the runtime"


async def guest_text(sandbox: Sandbox, command: str) -> str:
    result = await run(sandbox, command)
    assert result.end.exit_code == 0, (command, result)
    return result.text.strip()


async def test_identity_sets_hostname_machine_id_and_clock(sandbox: Sandbox) -> None:
    wrong = fresh_identity("sb-tomorrow")
    wrong = wrong.model_copy(update={"time_unix_ns": wrong.time_unix_ns + DAY_NS})
    reply = await sandbox.channel.identity(wrong)
    assert reply.ok
    assert reply.machine_id_written
    assert reply.entropy_bytes == len(wrong.entropy)
    # The guest started on its own RTC; the step is about a day forward.
    assert abs(reply.clock_step_ms - DAY_NS // 10**6) < 60_000
    guest_s = int(await guest_text(sandbox, "date +%s"))
    assert abs(guest_s - (time.time() + DAY_NS / 1e9)) < CLOCK_SLACK_S
    assert await guest_text(sandbox, "hostname") == "sb-tomorrow"
    assert await guest_text(sandbox, "cat /etc/machine-id") == wrong.machine_id

    right = fresh_identity("sb-restored")
    reply = await sandbox.channel.identity(right)
    assert abs(reply.clock_step_ms + DAY_NS // 10**6) < CLOCK_SLACK_S * 1000
    assert abs(int(await guest_text(sandbox, "date +%s")) - time.time()) < CLOCK_SLACK_S
    assert await guest_text(sandbox, "hostname") == "sb-restored"
    assert await guest_text(sandbox, "cat /etc/machine-id") == right.machine_id
    assert await guest_text(sandbox, "ls -a /etc | grep -c machine-id") == "1"  # no temp left
    # Without a machine-id (a warmed pool entry's handout) the guest keeps its own.
    reply = await sandbox.channel.identity(fresh_identity("sb-handed-out", machine_id=False))
    assert not reply.machine_id_written
    assert await guest_text(sandbox, "hostname") == "sb-handed-out"
    assert await guest_text(sandbox, "cat /etc/machine-id") == right.machine_id
    # The pool was seeded: a read of the blocking device returns at once.
    assert await guest_text(sandbox, "head -c 32 /dev/random | wc -c") == "32"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hostname", "Not_A_Label", "DNS label"),
        ("entropy", base64.b64encode(bytes(16)).decode(), "32..512 bytes, got 16"),
        ("machine_id", "abc", "32 lowercase hex"),
        ("time_unix_ns", "now", "must be an integer"),
    ],
)
async def test_a_malformed_identity_is_refused_and_changes_nothing(
    sandbox: Sandbox, field: str, value: object, message: str
) -> None:
    before = await guest_text(sandbox, "hostname; cat /etc/machine-id")
    fields = {**fresh_identity("sb-never").payload(), field: value}
    del fields["op"]
    with pytest.raises(AgentError) as caught:
        await sandbox.channel.call("identity", IdentityReply, **fields)
    assert caught.value.code == "bad_request"
    assert f'"{field}"' in caught.value.message
    assert message in caught.value.message
    assert await guest_text(sandbox, "hostname; cat /etc/machine-id") == before
    assert await guest_text(sandbox, "echo still-working") == "still-working"
