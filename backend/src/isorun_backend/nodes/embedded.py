"""The embedded node: hostd's Runtime in this process (the single-machine default).

Its VMs are this process's children and die with it (PDEATHSIG); ``aclose`` destroys them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator

from isorun_hostd.agent_channel import (
    AgentChannel,
    ChannelClosed,
    ExecEnd,
    FileStat,
    Output,
    Process,
    ShellAttachment,
    Tunnel,
)
from isorun_hostd.agent_channel.protocol import Empty, ProcessList, ShellInfo, ShellOpened
from isorun_hostd.api.models import (
    NodeAuditList,
    NodeAuditReport,
    NodeInfo,
    NodeNetwork,
    NodeSandbox,
    NodeShellCreate,
    NodeSnapshot,
)
from isorun_hostd.api.shell_frames import SignalTarget
from isorun_hostd.api.shell_socket import ChannelTerminal
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec
from isorun_hostd.sandboxes import ExecOptions, Runtime, Sandbox

from isorun_backend.nodes.base import Node, NodePort, NodeProcess, NodeShell

EMBEDDED = "embedded"


class EmbeddedNode(Node):
    keeps_vms = False

    def __init__(self, runtime: Runtime) -> None:
        self.name = EMBEDDED
        self.runtime = runtime

    async def start(self) -> None:
        await self.runtime.start()

    async def aclose(self) -> None:
        await self.runtime.aclose()

    async def info(self) -> NodeInfo:
        room = self.runtime.capacity()
        images = await asyncio.to_thread(self.runtime.cached_images)
        return NodeInfo(
            accelerator=self.runtime.caps.accel,
            vcpus_total=room.vcpus_total,
            vcpus_allocated=room.vcpus_allocated,
            memory_mib_total=room.memory_mib_total,
            memory_mib_allocated=room.memory_mib_allocated,
            images=sorted(images),
        )

    async def create(
        self,
        sandbox_id: str,
        image_ref: str,
        *,
        vcpus: int,
        mem_mib: int,
        network: NetworkSpec | None = None,
    ) -> NodeSandbox:
        sandbox = await self.runtime.create(
            image_ref, vcpus=vcpus, mem_mib=mem_mib, sandbox_id=sandbox_id, network=network
        )
        return _public(sandbox)

    async def destroy(self, sandbox_id: str) -> None:
        sandbox = self.runtime.get(sandbox_id)
        if sandbox is not None:
            await self.runtime.destroy(sandbox)

    async def sandboxes(self) -> list[NodeSandbox]:
        return [_public(sandbox) for sandbox in self.runtime.sandboxes]

    async def exec(
        self,
        sandbox_id: str,
        command: list[str] | str,
        options: ExecOptions,
        stdin: bytes | None = None,
    ) -> NodeProcess:
        sandbox = self._sandbox(sandbox_id)
        if stdin is None:
            return _EmbeddedProcess(await sandbox.exec(command, **options))
        return _EmbeddedProcess(await sandbox.exec_with_input(command, stdin, **options))

    async def processes(self, sandbox_id: str) -> ProcessList:
        return await self._sandbox(sandbox_id).channel.call("ps", ProcessList)

    async def signal(self, sandbox_id: str, pid: int, signum: int) -> None:
        await self._sandbox(sandbox_id).channel.call("signal", Empty, pid=pid, signal=signum)

    async def read_file(self, sandbox_id: str, path: str) -> tuple[FileStat, AsyncIterator[bytes]]:
        return await self._sandbox(sandbox_id).channel.read_file(path)

    async def write_file(
        self,
        sandbox_id: str,
        path: str,
        content: AsyncIterable[bytes],
        *,
        mode: int,
        parents: bool,
    ) -> int:
        channel = self._sandbox(sandbox_id).channel
        return await channel.write_file(path, content, mode=mode, parents=parents)

    async def list_dir(self, sandbox_id: str, path: str) -> list[FileStat]:
        return await self._sandbox(sandbox_id).channel.list_dir(path)

    async def stat(self, sandbox_id: str, path: str) -> FileStat:
        return await self._sandbox(sandbox_id).channel.call("stat", FileStat, path=path)

    async def mkdir(self, sandbox_id: str, path: str, parents: bool) -> None:
        channel = self._sandbox(sandbox_id).channel
        await channel.call("mkdir", Empty, path=path, parents=parents)

    async def rename(self, sandbox_id: str, src: str, dst: str) -> None:
        await self._sandbox(sandbox_id).channel.call("rename", Empty, src=src, dst=dst)

    async def remove(self, sandbox_id: str, path: str, recursive: bool) -> None:
        channel = self._sandbox(sandbox_id).channel
        await channel.call("remove", Empty, path=path, recursive=recursive)

    async def open_shell(self, sandbox_id: str, request: NodeShellCreate) -> ShellOpened:
        return await self._sandbox(sandbox_id).open_shell(
            request.command,
            env=request.env,
            cwd=request.cwd,
            user=request.user,
            cols=request.cols,
            rows=request.rows,
            scrollback_bytes=request.scrollback_bytes,
        )

    async def shells(self, sandbox_id: str) -> list[ShellInfo]:
        return await self._sandbox(sandbox_id).channel.list_shells()

    async def attach_shell(
        self, sandbox_id: str, shell_id: str, *, write: bool, scrollback: bool
    ) -> NodeShell:
        sandbox = self._sandbox(sandbox_id)
        # The sandbox audits the detach when its context ends: at the shell's detach().
        stack = contextlib.AsyncExitStack()
        attachment = await stack.enter_async_context(
            sandbox.attached_shell(shell_id, write=write, scrollback=scrollback)
        )
        return _EmbeddedShell(attachment, sandbox.channel, stack)

    async def resize_shell(self, sandbox_id: str, shell_id: str, cols: int, rows: int) -> None:
        await self._sandbox(sandbox_id).channel.resize_shell(shell_id, cols=cols, rows=rows)

    async def signal_shell(
        self, sandbox_id: str, shell_id: str, signum: int, target: SignalTarget
    ) -> None:
        await self._sandbox(sandbox_id).channel.signal_shell(shell_id, signum, target=target)

    async def close_shell(self, sandbox_id: str, shell_id: str) -> None:
        await self._sandbox(sandbox_id).close_shell(shell_id)

    async def fork(self, sandbox_id: str, count: int) -> list[NodeSandbox]:
        clones = await self.runtime.fork(self._sandbox(sandbox_id), count)
        return [_public(clone) for clone in clones]

    async def snapshot(self, sandbox_id: str, snapshot_id: str) -> NodeSnapshot:
        meta = await self.runtime.snapshot(self._sandbox(sandbox_id), snapshot_id=snapshot_id)
        return NodeSnapshot.from_meta(meta)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        await asyncio.to_thread(self.runtime.snapshots.delete, snapshot_id)

    async def restore(
        self, snapshot_id: str, sandbox_id: str, *, network: NetworkSpec | None = None
    ) -> NodeSandbox:
        sandbox = await self.runtime.from_snapshot(
            snapshot_id, sandbox_id=sandbox_id, network=network
        )
        return _public(sandbox)

    async def hibernate(self, sandbox_id: str) -> NodeSnapshot:
        return NodeSnapshot.from_meta(await self.runtime.hibernate(self._sandbox(sandbox_id)))

    async def resume(self, sandbox_id: str, *, network: NetworkSpec | None = None) -> NodeSandbox:
        return _public(await self.runtime.resume(sandbox_id, network=network))

    async def forget_hibernation(self, sandbox_id: str) -> None:
        await asyncio.to_thread(self.runtime.hibernations.delete, sandbox_id)

    async def network(self, sandbox_id: str) -> NodeNetwork:
        sandbox = self._sandbox(sandbox_id)
        return NodeNetwork.from_spec(sandbox.network, await sandbox.drops())

    async def set_policy(self, sandbox_id: str, policy: EgressPolicy) -> EgressPolicy:
        return (await self.runtime.set_policy(self._sandbox(sandbox_id), policy)).policy

    async def audit_entries(self, sandbox_id: str, *, after: int, limit: int) -> NodeAuditList:
        audit = self.runtime.audit
        entries = await asyncio.to_thread(audit.entries, sandbox_id, after=after, limit=limit)
        return NodeAuditList.page(entries, limit)

    async def audit_verify(self) -> NodeAuditReport:
        return NodeAuditReport.from_report(await asyncio.to_thread(self.runtime.audit.verify))

    async def connect_port(self, sandbox_id: str, port: int) -> NodePort:
        return _EmbeddedPort(await self._sandbox(sandbox_id).connect_port(port))

    def _sandbox(self, sandbox_id: str) -> Sandbox:
        sandbox = self.runtime.get(sandbox_id)
        if sandbox is None:
            raise ChannelClosed(f"sandbox {sandbox_id} is gone from this node")
        return sandbox


class _EmbeddedProcess:
    def __init__(self, process: Process) -> None:
        self._process = process
        self.pid = process.pid

    def output(self) -> AsyncIterator[Output]:
        return self._process.output()

    async def wait(self) -> ExecEnd:
        return await self._process.wait()

    async def detach(self) -> None:
        self._process.detach()


class _EmbeddedShell(ChannelTerminal):
    def __init__(
        self, attachment: ShellAttachment, channel: AgentChannel, stack: contextlib.AsyncExitStack
    ) -> None:
        super().__init__(attachment, channel)
        self._stack = stack

    async def detach(self) -> None:
        await self._stack.aclose()


class _EmbeddedPort:
    def __init__(self, tunnel: Tunnel) -> None:
        self._tunnel = tunnel

    async def read(self) -> bytes:
        return await self._tunnel.read()

    async def write(self, data: bytes) -> None:
        await self._tunnel.write(data)

    async def write_eof(self) -> None:
        await self._tunnel.write_eof()

    async def aclose(self) -> None:
        self._tunnel.close()


def _public(sandbox: Sandbox) -> NodeSandbox:
    spec = sandbox.vm.spec
    return NodeSandbox(
        id=sandbox.id, image_ref=sandbox.image.pinned, vcpus=spec.vcpus, mem_mib=spec.mem_mib
    )
