"""The full profile's extra tools: everything else the isorun API can do today.

Sandbox listing and keep-alive, the process list, and file stat/mkdir/remove/rename. Fork,
snapshot, hibernate and public URLs join this profile when the API has them (spec/api.md has
none of them yet), so a host that picked "full" gets them without a configuration change.
"""

from typing import Annotated

from isorun import AsyncSandbox
from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations
from pydantic import Field

from isorun_mcp._core import GuestPath, SandboxId, SessionContext, sandboxes
from isorun_mcp._results import FileEntry, PathDone, Process, ProcessList, SandboxList
from isorun_mcp._results import Sandbox as SandboxResult
from isorun_mcp._sandboxes import Sandboxes, tool_errors


async def sandbox_list(
    ctx: SessionContext,
    state: Annotated[
        str | None, Field(description='Only sandboxes in this state, e.g. "running".')
    ] = None,
) -> SandboxList:
    """List the sandboxes this API key can see."""
    with tool_errors():
        found = [
            SandboxResult.of(info)
            async for info in AsyncSandbox.list(state=state, client=sandboxes(ctx).client)
        ]
    return SandboxList(sandboxes=found)


async def sandbox_keep_alive(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    timeout_s: Annotated[int, Field(ge=1, description="Seconds from now until it expires.")],
) -> SandboxResult:
    """Move the sandbox's expiry to timeout_s seconds from now."""
    async with sandboxes(ctx).use(sandbox_id) as sandbox:
        return SandboxResult.of(await sandbox.keep_alive(timeout_s))


async def sandbox_processes(ctx: SessionContext, sandbox_id: SandboxId) -> ProcessList:
    """List the processes started in the sandbox through sandbox_exec, running or finished."""
    async with sandboxes(ctx).use(sandbox_id) as sandbox:
        found = await sandbox.processes()
    return ProcessList(processes=[Process.of(info) for info in found])


async def sandbox_stat(ctx: SessionContext, sandbox_id: SandboxId, path: GuestPath) -> FileEntry:
    """Return the metadata of a path in the sandbox (a symlink itself, not its target)."""
    async with sandboxes(ctx).use(sandbox_id, path) as sandbox:
        return FileEntry.of(await sandbox.files.stat(path))


async def sandbox_mkdir(ctx: SessionContext, sandbox_id: SandboxId, path: GuestPath) -> PathDone:
    """Create a directory in the sandbox, with any missing parents."""
    async with sandboxes(ctx).use(sandbox_id, path) as sandbox:
        await sandbox.files.mkdir(path, parents=True)
    return PathDone(path=path)


async def sandbox_remove(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    path: GuestPath,
    recursive: Annotated[bool, Field(description="Needed for a non-empty directory.")] = False,
) -> PathDone:
    """Remove a file or directory in the sandbox."""
    async with sandboxes(ctx).use(sandbox_id, path) as sandbox:
        await sandbox.files.remove(path, recursive=recursive)
    return PathDone(path=path)


async def sandbox_rename(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    src: GuestPath,
    dst: Annotated[str, Field(description="The new absolute path; a file there is replaced.")],
) -> PathDone:
    """Move a file or directory in the sandbox."""
    async with sandboxes(ctx).use(sandbox_id, src) as sandbox:
        await sandbox.files.rename(src, dst)
    return PathDone(path=dst)


def register(server: FastMCP[Sandboxes]) -> None:
    """Add the full profile's extra tools to `server` (after the core ones)."""
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_list)
    server.tool(annotations=ToolAnnotations(idempotentHint=True))(sandbox_keep_alive)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_processes)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_stat)
    server.tool(annotations=ToolAnnotations(idempotentHint=True))(sandbox_mkdir)
    server.tool()(sandbox_remove)
    server.tool()(sandbox_rename)
