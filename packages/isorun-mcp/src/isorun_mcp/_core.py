"""The core profile: create a sandbox, run commands, read/write/list files, delete it.

Six tools, few enough for chat hosts that show every tool to the model. Each takes the
`sandbox_id` that `sandbox_create` returned; see `isorun_mcp._sandboxes` for the errors.
"""

from typing import Annotated, Any

from isorun import AsyncSandbox
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from isorun_mcp._results import Deleted, DirListing, Exec, FileContent, FileEntry, FileWritten
from isorun_mcp._results import Sandbox as SandboxResult
from isorun_mcp._sandboxes import Sandboxes, tool_errors

SessionContext = Context[Any, Sandboxes, Any]
"""The context FastMCP injects; `lifespan_context` is the session's `Sandboxes`."""

SandboxId = Annotated[str, Field(description="The id sandbox_create returned (sb-...).")]
GuestPath = Annotated[str, Field(description="An absolute path inside the sandbox.")]


def sandboxes(ctx: SessionContext) -> Sandboxes:
    session: Sandboxes = ctx.request_context.lifespan_context
    return session


async def sandbox_create(  # noqa: PLR0917 - FastMCP passes tool arguments by name
    ctx: SessionContext,
    image: Annotated[
        str, Field(description='OCI image, or a short name such as "python".')
    ] = "python",
    vcpus: Annotated[int, Field(ge=1, description="Virtual CPUs.")] = 1,
    memory_mib: Annotated[int, Field(ge=1, description="Memory in MiB.")] = 1024,
    timeout_s: Annotated[
        int, Field(ge=1, description="Seconds until the sandbox is destroyed on its own.")
    ] = 300,
    snapshot: Annotated[
        str | None,
        Field(
            description="Start from this snapshot (snap-...) instead of an image; it fixes the "
            "image, vcpus and memory."
        ),
    ] = None,
    allow: Annotated[
        list[str] | None,
        Field(
            description="Egress to open: host names (pypi.org), *.wildcards, IPv4 addresses or "
            "CIDRs. Without allow, deny or profile the sandbox has no network access at all."
        ),
    ] = None,
    deny: Annotated[
        list[str] | None,
        Field(description="Egress to close, same kinds of entry; allow wins over deny."),
    ] = None,
    profile: Annotated[
        str | None,
        Field(
            description='Base egress rules: "locked-down" (nothing), "unrestricted", "openai", '
            '"claude-code", "data-science" or "web-dev".'
        ),
    ] = None,
) -> SandboxResult:
    """Boot a new sandbox (a microVM from an OCI image, or from a snapshot) and return its
    sandbox_id. It has no network access unless allow or profile opens some."""
    session = sandboxes(ctx)
    with tool_errors():
        sandbox = await AsyncSandbox.create(
            image,
            vcpus=vcpus,
            memory_mib=memory_mib,
            timeout_s=timeout_s,
            snapshot=snapshot,
            allow=allow,
            deny=deny,
            profile=profile,
            secrets=session.secrets,
            client=session.client,
        )
    session.remember(sandbox)
    return SandboxResult.of(sandbox.info)


async def sandbox_exec(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    command: Annotated[str, Field(description="A shell command line, run by /bin/sh -c.")],
    timeout_s: Annotated[
        float | None, Field(gt=0, description="Kill the command after this many seconds.")
    ] = None,
    cwd: Annotated[str | None, Field(description="Working directory.")] = None,
) -> Exec:
    """Run a shell command in the sandbox and return its exit code, stdout and stderr.

    A non-zero exit code or a timeout is a normal result, not an error.
    """
    async with sandboxes(ctx).use(sandbox_id) as sandbox:
        return Exec.of(await sandbox.exec(command, timeout_s=timeout_s, cwd=cwd))


async def sandbox_read_file(
    ctx: SessionContext, sandbox_id: SandboxId, path: GuestPath
) -> FileContent:
    """Read a UTF-8 text file from the sandbox."""
    async with sandboxes(ctx).use(sandbox_id, path) as sandbox:
        data = await sandbox.files.read(path)
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Replacing bytes would hand the model a corrupted file it might write back.
        raise ToolError(
            f"{path} in sandbox {sandbox_id} is not UTF-8 text ({len(data)} bytes); "
            "read it with sandbox_exec, e.g. `base64 FILE`"
        ) from exc
    return FileContent(path=path, content=content, size_bytes=len(data))


async def sandbox_write_file(
    ctx: SessionContext,
    sandbox_id: SandboxId,
    path: GuestPath,
    content: Annotated[str, Field(description="The whole new content, as UTF-8 text.")],
) -> FileWritten:
    """Write a text file in the sandbox, replacing it; missing parent directories are created."""
    async with sandboxes(ctx).use(sandbox_id, path) as sandbox:
        written = await sandbox.files.write(path, content, parents=True)
    return FileWritten(path=written.path, size_bytes=written.size_bytes)


async def sandbox_list_dir(
    ctx: SessionContext, sandbox_id: SandboxId, path: GuestPath = "/"
) -> DirListing:
    """List a directory in the sandbox: name, type, size and mode of each entry."""
    async with sandboxes(ctx).use(sandbox_id, path) as sandbox:
        entries = await sandbox.files.list(path)
    return DirListing(path=path, entries=[FileEntry.of(entry) for entry in entries])


async def sandbox_delete(ctx: SessionContext, sandbox_id: SandboxId) -> Deleted:
    """Destroy the sandbox and everything in it."""
    session = sandboxes(ctx)
    async with session.use(sandbox_id) as sandbox:
        await sandbox.destroy()
    session.forget(sandbox_id)
    return Deleted(sandbox_id=sandbox_id, deleted=True)


def register(server: FastMCP[Sandboxes]) -> None:
    """Add the core tools to `server`."""
    server.tool(annotations=ToolAnnotations(destructiveHint=False))(sandbox_create)
    server.tool()(sandbox_exec)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_read_file)
    server.tool(annotations=ToolAnnotations(idempotentHint=True))(sandbox_write_file)
    server.tool(annotations=ToolAnnotations(readOnlyHint=True))(sandbox_list_dir)
    server.tool()(sandbox_delete)
