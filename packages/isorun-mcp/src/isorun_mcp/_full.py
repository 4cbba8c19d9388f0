"""The full profile's extra tools: everything else the isorun API can do today.

Sandbox listing and keep-alive, the process list, file stat/mkdir/remove/rename, and the saved
states: fork, snapshots (save, list, delete; `sandbox_create(snapshot=...)` starts from one),
hibernate and resume; the sandbox's network (policy, secret names, packets refused); and public
URLs to a port of a sandbox (`sandbox_url`), for a server the model started there. The
persistent shells' tools are in `isorun_mcp._shells`, registered with these.
"""

from typing import Annotated

from isorun import AsyncSandbox
from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations
from pydantic import Field

from isorun_mcp._core import GuestPath, SandboxId, SessionContext, sandboxes
from isorun_mcp._results import (
    FileEntry,
    Forked,
    Network,
    PathDone,
    Process,
    ProcessList,
    SandboxList,
    SnapshotDeleted,
    SnapshotList,
    Url,
)
from isorun_mcp._results import Sandbox as SandboxResult
from isorun_mcp._results import Snapshot as SnapshotResult
from isorun_mcp._sandboxes import Sandboxes, tool_errors

SnapshotId = Annotated[str, Field(description="The id sandbox_snapshot returned (snap-...).")]


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


async def sandbox_fork(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    count: Annotated[int, Field(ge=1, le=16, description="How many clones to make.")] = 1,
) -> Forked:
    """Clone a running sandbox: each clone continues from it as it is now (files, running
    processes) and is a sandbox of its own, to try different things in parallel."""
    session = sandboxes(ctx)
    async with session.use(sandbox_id) as sandbox:
        clones = await sandbox.fork(count)
    for clone in clones:
        session.remember(clone)
    return Forked(
        source_sandbox_id=sandbox_id, sandboxes=[SandboxResult.of(c.info) for c in clones]
    )


async def sandbox_snapshot(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    keep: Annotated[
        bool, Field(description="Keep it after the sandbox is deleted (else it goes with it).")
    ] = False,
    name: Annotated[str | None, Field(description="A name to recognise it by.")] = None,
) -> SnapshotResult:
    """Save a running sandbox (it continues); sandbox_create(snapshot=...) starts new sandboxes
    from the saved state."""
    async with sandboxes(ctx).use(sandbox_id) as sandbox:
        return SnapshotResult.of(await sandbox.snapshot(keep=keep, name=name))


async def sandbox_list_snapshots(
    ctx: SessionContext,
    sandbox_id: Annotated[str | None, Field(description="Only this sandbox's snapshots.")] = None,
) -> SnapshotList:
    """List the snapshots this API key can see, newest first."""
    client = sandboxes(ctx).client
    with tool_errors(sandbox_id):
        found = [
            SnapshotResult.of(snap) async for snap in client.snapshots.list(sandbox_id=sandbox_id)
        ]
    return SnapshotList(snapshots=found)


async def sandbox_delete_snapshot(ctx: SessionContext, snapshot_id: SnapshotId) -> SnapshotDeleted:
    """Delete a snapshot; sandboxes started from it keep running."""
    with tool_errors():
        await sandboxes(ctx).client.snapshots.delete(snapshot_id)
    return SnapshotDeleted(snapshot_id=snapshot_id, deleted=True)


async def sandbox_hibernate(ctx: SessionContext, sandbox_id: SandboxId) -> SandboxResult:
    """Save the sandbox to disk and stop it: it costs nothing until sandbox_resume (or any
    command or file call on it, which resumes it first)."""
    async with sandboxes(ctx).use(sandbox_id) as sandbox:
        return SandboxResult.of(await sandbox.hibernate())


async def sandbox_resume(ctx: SessionContext, sandbox_id: SandboxId) -> SandboxResult:
    """Bring a hibernated sandbox back, its processes and files as they were."""
    async with sandboxes(ctx).use(sandbox_id) as sandbox:
        return SandboxResult.of(await sandbox.resume())


async def sandbox_network(ctx: SessionContext, sandbox_id: SandboxId) -> Network:
    """Show the sandbox's egress policy, the secrets its host injects (names, never values)
    and how many packets it has had refused."""
    async with sandboxes(ctx).use(sandbox_id) as sandbox:
        return Network.of(sandbox_id, await sandbox.network.get())


async def sandbox_url(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    port: Annotated[
        int,
        Field(ge=1, le=65535, description="The port the server listens on in the sandbox."),
    ],
    expires_in_s: Annotated[
        int, Field(ge=1, description="Seconds the URL works for (at most 7 days).")
    ] = 3600,
    public: Annotated[
        bool,
        Field(
            description="true: anyone with the URL gets in. false: each request also needs an "
            "isorun API key of this account in the X-Isorun-Key header."
        ),
    ] = True,
) -> Url:
    """Get an https URL for a server you started in the sandbox on PORT, reachable from outside
    the sandbox: to show a web app to a person, take a webhook, or let another program or agent
    call an API you run. Start the server first, in the background (sandbox_exec "nohup
    python3 -m http.server 8000 >/dev/null 2>&1 &", or in a shell_open shell); listening on
    127.0.0.1 is enough. Give out `url` as it is: it carries its token. While nothing listens
    on the port, requests get 502; a hibernated sandbox is woken by the first request."""
    async with sandboxes(ctx).use(sandbox_id) as sandbox:
        signed = await sandbox.url(port, expires_in=expires_in_s, public=public)
    return Url.of(sandbox_id, signed)


def register(server: FastMCP[Sandboxes]) -> None:
    """Add the full profile's extra tools to `server` (after the core ones)."""
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_list)
    server.tool(annotations=ToolAnnotations(idempotentHint=True))(sandbox_keep_alive)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_processes)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_stat)
    server.tool(annotations=ToolAnnotations(idempotentHint=True))(sandbox_mkdir)
    server.tool()(sandbox_remove)
    server.tool()(sandbox_rename)
    server.tool()(sandbox_fork)
    server.tool()(sandbox_snapshot)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_list_snapshots)
    server.tool(annotations=ToolAnnotations(destructiveHint=True))(sandbox_delete_snapshot)
    server.tool(annotations=ToolAnnotations(idempotentHint=True))(sandbox_hibernate)
    server.tool(annotations=ToolAnnotations(idempotentHint=True))(sandbox_resume)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_network)
    server.tool(annotations=ToolAnnotations(destructiveHint=False, idempotentHint=True))(
        sandbox_url
    )
