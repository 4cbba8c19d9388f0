"""Files in a sandbox, through the agent: streamed both ways, never held whole in memory.

Paths are absolute guest paths; relative ones are refused here (the agent would resolve them
against its own working folder, which the caller cannot see). Guest errors translate as:
``not_found`` -> NotFound, any other agent code -> FileError naming it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from typing import TypeVar

from isorun_hostd.agent_channel import AgentError, ChannelError, FileStat

from isorun_backend.core.security import Principal
from isorun_backend.models import FileList, FileStatPublic, FileWritten
from isorun_backend.services.errors import FileError, InvalidRequest, NotFound, ServiceError
from isorun_backend.services.sandboxes import SandboxService

MAX_PATH_CHARS = 4096

_T = TypeVar("_T")


class FileService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def read(
        self, principal: Principal, sandbox_id: str, path: str
    ) -> tuple[FileStatPublic, AsyncIterator[bytes]]:
        """Open a file for reading: its stat now, its bytes as the caller iterates.

        Raises:
            InvalidRequest, SandboxNotFound, SandboxNotRunning, NotFound, FileError; the
            iterator raises ServiceError if the transfer breaks.
        """
        check_path(path, "path")
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        stat, body = await self._guest(sandbox_id, sandbox.node.read_file(sandbox_id, path))
        return _public(stat), self._body(sandbox_id, body)

    async def _body(self, sandbox_id: str, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in body:
                yield chunk
        except AgentError as exc:
            raise _file_error(exc, sandbox_id) from exc
        except ChannelError as exc:
            raise self._sandboxes.lost(sandbox_id, exc) from exc

    async def write(
        self,
        principal: Principal,
        sandbox_id: str,
        path: str,
        content: AsyncIterable[bytes],
        *,
        mode: int,
        parents: bool,
    ) -> FileWritten:
        """Stream ``content`` into a file (created or truncated) as it arrives.

        Raises:
            InvalidRequest, SandboxNotFound, SandboxNotRunning, NotFound (no parent folder and
            ``parents`` false), FileError.
        """
        check_path(path, "path")
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        written = await self._guest(
            sandbox_id,
            sandbox.node.write_file(sandbox_id, path, content, mode=mode, parents=parents),
        )
        return FileWritten(path=path, bytes=written)

    async def listing(self, principal: Principal, sandbox_id: str, path: str) -> FileList:
        check_path(path, "path")
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        entries = await self._guest(sandbox_id, sandbox.node.list_dir(sandbox_id, path))
        return FileList(data=[_public(entry) for entry in entries])

    async def stat(self, principal: Principal, sandbox_id: str, path: str) -> FileStatPublic:
        check_path(path, "path")
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        return _public(await self._guest(sandbox_id, sandbox.node.stat(sandbox_id, path)))

    async def mkdir(self, principal: Principal, sandbox_id: str, path: str, parents: bool) -> None:
        check_path(path, "path")
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        await self._guest(sandbox_id, sandbox.node.mkdir(sandbox_id, path, parents))

    async def rename(self, principal: Principal, sandbox_id: str, src: str, dst: str) -> None:
        check_path(src, "src")
        check_path(dst, "dst")
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        await self._guest(sandbox_id, sandbox.node.rename(sandbox_id, src, dst))

    async def remove(
        self, principal: Principal, sandbox_id: str, path: str, recursive: bool
    ) -> None:
        check_path(path, "path")
        sandbox = await self._sandboxes.running(principal, sandbox_id)
        await self._guest(sandbox_id, sandbox.node.remove(sandbox_id, path, recursive))

    async def _guest(self, sandbox_id: str, operation: Awaitable[_T]) -> _T:
        try:
            return await operation
        except AgentError as exc:
            raise _file_error(exc, sandbox_id) from exc
        except ChannelError as exc:
            raise self._sandboxes.lost(sandbox_id, exc) from exc


def check_path(path: str, field: str) -> None:
    """Raises: InvalidRequest, unless ``path`` is absolute, NUL-free and of a sane length."""
    if not path.startswith("/"):
        raise InvalidRequest(f"{path!r} is not an absolute guest path", field=field)
    if "\0" in path or len(path) > MAX_PATH_CHARS:
        raise InvalidRequest("not a usable guest path", field=field)


def _file_error(exc: AgentError, sandbox_id: str) -> ServiceError:
    if exc.code == "not_found":
        return NotFound(f"{exc.op}: {exc.message}", sandbox_id=sandbox_id)
    return FileError(
        f"{exc.op} failed in the guest: {exc.code}: {exc.message}",
        guest_code=exc.code,
        sandbox_id=sandbox_id,
    )


def _public(stat: FileStat) -> FileStatPublic:
    return FileStatPublic.model_validate(stat.model_dump(include=set(FileStatPublic.model_fields)))
