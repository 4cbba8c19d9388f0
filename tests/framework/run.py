"""Helpers to run a command in a sandbox and collect what it printed."""

from __future__ import annotations

from dataclasses import dataclass

from isorun_hostd.agent_channel import Channel, ExecEnd, Process
from isorun_hostd.sandboxes import ExecOptions, Sandbox
from typing_extensions import Unpack


@dataclass(frozen=True)
class Result:
    end: ExecEnd
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode()


async def collect(process: Process) -> Result:
    out = {Channel.STDOUT: bytearray(), Channel.STDERR: bytearray()}
    async for chunk in process.output():
        out[chunk.channel] += chunk.data
    return Result(await process.wait(), bytes(out[Channel.STDOUT]), bytes(out[Channel.STDERR]))


async def run(sandbox: Sandbox, command: list[str] | str, **options: Unpack[ExecOptions]) -> Result:
    return await collect(await sandbox.exec(command, **options))
