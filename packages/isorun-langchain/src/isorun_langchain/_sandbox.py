"""deepagents sandbox backends over an isorun sandbox: `IsorunSandbox` and `AsyncIsorunSandbox`.

deepagents' `BaseSandbox` builds every file tool (ls, read, write, edit, grep, glob) on four
primitives, which these classes implement over one isorun VM:

```
execute(command, timeout=)    sb.exec(command, cwd=workdir, timeout_s=)   → ExecuteResponse
upload_files([(path, data)])  sb.files.write(path, data, parents=True)    → [FileUploadResponse]
download_files([path])        sb.files.read(path)                         → [FileDownloadResponse]
id                            sb.id
```

Guest-side failures are results, never exceptions, as the protocol asks: a non-zero exit or a
timeout (exit 124) is an `ExecuteResponse`; a file the guest refuses is the protocol's
`FileOperationError` literal on that file's response, and the other files still go through.
Failures of isorun itself (the sandbox is gone, the API is unreachable) are raised as the SDK's
errors, because no answer the model could act on exists for them.

Commands run under the guest's `/bin/sh -c`, so an image needs a POSIX shell; deepagents' file
tools also need `python3` in the image (the `python` image has both).
"""

from __future__ import annotations

import posixpath
from typing import NoReturn

from deepagents.backends.protocol import (
    ExecuteResponse,
    FileDownloadResponse,
    FileOperationError,
    FileUploadResponse,
)
from deepagents.backends.sandbox import BaseSandbox
from isorun import AsyncSandbox, ExecResult, FileError, InvalidRequest, NotFound, Sandbox

from isorun_langchain._output import combined_output, exit_status

DEFAULT_TIMEOUT_S = 30 * 60
"""Default command timeout, the one deepagents' other sandboxes use."""

# A FileError's detail names the guest's refusal: the agent's code (spec/protocol.md section 5)
# from the real API, the errno name from `isorun.testing.FakeBackend`.
_GUEST_FILE_ERRORS: dict[str, FileOperationError] = {
    "permission_denied": "permission_denied",
    "EACCES": "permission_denied",
    "EPERM": "permission_denied",
    "is_a_directory": "is_directory",
    "EISDIR": "is_directory",
}


def _file_error(error: FileError | InvalidRequest | NotFound) -> FileOperationError:
    """Return the protocol's literal for a file operation the guest (or the API) refused."""
    if isinstance(error, NotFound):
        return "file_not_found"
    if isinstance(error, FileError):
        for code, literal in _GUEST_FILE_ERRORS.items():
            if code in (error.detail or ""):
                return literal
    # A relative or malformed path (400 invalid_request), or a refusal with no closer literal.
    return "invalid_path"


class _IsorunBackend(BaseSandbox):
    """What both classes share: the options, path resolution and the result mapping."""

    def __init__(self, sandbox_id: str, workdir: str | None, timeout: int) -> None:
        self._sandbox_id = sandbox_id
        self._workdir = workdir
        self._timeout = timeout

    @property
    def id(self) -> str:
        """The isorun sandbox id."""
        return self._sandbox_id

    def _path(self, path: str) -> str:
        # The protocol's paths are absolute; a relative one is taken from `workdir`, as a
        # command's relative paths are.
        return posixpath.join(self._workdir, path) if self._workdir else path

    def _timeout_s(self, timeout: int | None) -> int | None:
        # None asks for the default; 0 asks for no limit, which isorun spells None.
        if timeout is None:
            return self._timeout or None
        return timeout or None

    @staticmethod
    def _response(result: ExecResult, timeout_s: int | None) -> ExecuteResponse:
        return ExecuteResponse(
            output=combined_output(result, timeout_s=timeout_s),
            exit_code=exit_status(result),
            truncated=result.truncated,
        )


class IsorunSandbox(_IsorunBackend):
    """A deepagents sandbox backend on an isorun `Sandbox` (the sync SDK).

    Pass it as `create_deep_agent(..., backend=IsorunSandbox(sandbox=sb))`. The async methods
    (`aexecute`, ...) run the sync ones in a thread; use `AsyncIsorunSandbox` with an
    `AsyncSandbox` for a native asyncio agent. The sandbox's lifetime stays the caller's.

    Args:
        sandbox: A running isorun sandbox.
        workdir: Working directory of commands, and the base of relative paths; None for the
            image's own.
        timeout: Default command timeout in seconds (`execute(timeout=None)`); 0 for none.

    Example:
        >>> from deepagents import create_deep_agent  # doctest: +SKIP
        >>> with Sandbox("python") as sb:
        ...     agent = create_deep_agent(model, backend=IsorunSandbox(sandbox=sb))
    """

    def __init__(
        self, *, sandbox: Sandbox, workdir: str | None = None, timeout: int = DEFAULT_TIMEOUT_S
    ) -> None:
        super().__init__(sandbox.id, workdir, timeout)
        self._sandbox = sandbox

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        """Run `command` under `/bin/sh -c` and return its combined output and exit status.

        Args:
            command: A shell command line.
            timeout: Seconds before the command is killed (exit code 124); None for the
                default, 0 for no limit.

        Raises:
            SandboxNotFound: The sandbox is gone.
            SandboxStateError: The sandbox is not running.
            OutcomeUnknown: The answer was lost: the command may have run.
        """
        timeout_s = self._timeout_s(timeout)
        result = self._sandbox.exec(command, cwd=self._workdir, timeout_s=timeout_s)
        return self._response(result, timeout_s)

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        """Write each file, creating missing parent folders; per-file errors, in order."""
        responses = []
        for path, content in files:
            try:
                self._sandbox.files.write(self._path(path), content, parents=True)
            except (FileError, InvalidRequest, NotFound) as error:
                responses.append(FileUploadResponse(path=path, error=_file_error(error)))
            else:
                responses.append(FileUploadResponse(path=path))
        return responses

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        """Read each file; per-file errors, in order."""
        responses = []
        for path in paths:
            try:
                content = self._sandbox.files.read(self._path(path))
            except (FileError, InvalidRequest, NotFound) as error:
                responses.append(FileDownloadResponse(path=path, error=_file_error(error)))
            else:
                responses.append(FileDownloadResponse(path=path, content=content))
        return responses


class AsyncIsorunSandbox(_IsorunBackend):
    """A deepagents sandbox backend on an isorun `AsyncSandbox`, for agents run with `ainvoke`.

    `aexecute`, `aupload_files` and `adownload_files` are native coroutines, and deepagents'
    async file tools are built on them. The sync methods refuse: an event loop cannot be
    driven from inside itself, so a sync agent wants `IsorunSandbox`.

    Args:
        sandbox: A running isorun async sandbox.
        workdir: As for `IsorunSandbox`.
        timeout: As for `IsorunSandbox`.
    """

    def __init__(
        self,
        *,
        sandbox: AsyncSandbox,
        workdir: str | None = None,
        timeout: int = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(sandbox.id, workdir, timeout)
        self._sandbox = sandbox

    async def aexecute(
        self,
        command: str,
        *,
        timeout: int | None = None,  # noqa: ASYNC109 - the command's limit, as the protocol names it
    ) -> ExecuteResponse:
        """Async `IsorunSandbox.execute`, with the same arguments and errors."""
        timeout_s = self._timeout_s(timeout)
        result = await self._sandbox.exec(command, cwd=self._workdir, timeout_s=timeout_s)
        return self._response(result, timeout_s)

    async def aupload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        """Async `IsorunSandbox.upload_files`."""
        responses = []
        for path, content in files:
            try:
                await self._sandbox.files.write(self._path(path), content, parents=True)
            except (FileError, InvalidRequest, NotFound) as error:
                responses.append(FileUploadResponse(path=path, error=_file_error(error)))
            else:
                responses.append(FileUploadResponse(path=path))
        return responses

    async def adownload_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        """Async `IsorunSandbox.download_files`."""
        responses = []
        for path in paths:
            try:
                content = await self._sandbox.files.read(self._path(path))
            except (FileError, InvalidRequest, NotFound) as error:
                responses.append(FileDownloadResponse(path=path, error=_file_error(error)))
            else:
                responses.append(FileDownloadResponse(path=path, content=content))
        return responses

    def _sync_refused(self) -> NoReturn:
        msg = "AsyncIsorunSandbox is async only: run the agent with ainvoke, or use IsorunSandbox"
        raise NotImplementedError(msg)

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        """Refused: see the class docstring."""
        self._sync_refused()

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        """Refused: see the class docstring."""
        self._sync_refused()

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        """Refused: see the class docstring."""
        self._sync_refused()
