"""`Sandboxes`: one MCP session's view of the isorun API, and the tool error convention.

Each MCP session (one stdio process, or one streamable-HTTP session) opens its own
`isorun.AsyncClient` in the server's lifespan and closes it when the session ends. Sandboxes
outlive the session: they are the API's, found again by id (`AsyncSandbox.connect`), and they
expire on their own `timeout_s` unless `sandbox_delete` comes first. Handles are cached per id
so that a tool call costs one API request, not a lookup plus the request.

Errors, as the model sees them:

```
guest outcome (non-zero exit, timed_out)      a normal result (`Exec`)
SandboxNotFound, SnapshotNotFound, NotFound   MCP tool error (isError): one line saying what
(missing path), FileError, SandboxStateError, was missing or refused, with the sandbox id and
SnapshotFailed, other API or transport errors path, so the model can correct its next call
```
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager

from isorun import (
    AsyncClient,
    AsyncSandbox,
    FileError,
    IsorunError,
    NotFound,
    SandboxNotFound,
    SandboxStateError,
    Secret,
    SnapshotFailed,
    SnapshotNotFound,
)
from mcp.server.fastmcp.exceptions import ToolError

from isorun_mcp._terminals import Terminals


class Sandboxes:
    """The sandboxes one MCP session touches, through one client.

    Args:
        client: The client every call goes through; closed by `aclose`.
        secrets: Given to every sandbox `sandbox_create` makes: the server's configuration
            holds them, so that no value passes through the model.
    """

    def __init__(self, client: AsyncClient, secrets: Sequence[Secret] = ()) -> None:
        self.client = client
        self.secrets = tuple(secrets)
        self._handles: dict[str, AsyncSandbox] = {}
        self.terminals = Terminals()
        """The shells this session reads and types into (`isorun_mcp._shells`)."""

    def remember(self, sandbox: AsyncSandbox) -> None:
        self._handles[sandbox.id] = sandbox

    @asynccontextmanager
    async def use(self, sandbox_id: str, path: str | None = None) -> AsyncIterator[AsyncSandbox]:
        """The sandbox `sandbox_id` (cached, else from the API), for the duration of one call.

        Raises:
            ToolError: No such sandbox, or the call inside failed (see `tool_errors`).
        """
        with tool_errors(sandbox_id, path):
            try:
                sandbox = self._handles.get(sandbox_id)
                if sandbox is None:
                    sandbox = await AsyncSandbox.connect(sandbox_id, client=self.client)
                    self._handles[sandbox_id] = sandbox
                yield sandbox
            except SandboxNotFound:
                # A cached handle outlived its sandbox (expired, deleted elsewhere).
                self.forget(sandbox_id)
                raise

    def forget(self, sandbox_id: str) -> None:
        self._handles.pop(sandbox_id, None)

    async def aclose(self) -> None:
        """Detach from the shells (they keep running) and close the client."""
        try:
            await self.terminals.aclose()
        finally:
            await self.client.aclose()


@contextmanager
def tool_errors(sandbox_id: str | None = None, path: str | None = None) -> Iterator[None]:
    """Turn the SDK's errors into `ToolError`s whose text tells the model what went wrong.

    Raises:
        ToolError: From any `IsorunError` raised inside, chained to it.
    """
    where = f" in sandbox {sandbox_id}" if sandbox_id else ""
    try:
        yield
    except SandboxNotFound as exc:
        raise ToolError(
            f"sandbox {sandbox_id} not found: it was deleted or expired, or the id is wrong"
        ) from exc
    except SnapshotNotFound as exc:
        raise ToolError(
            "snapshot not found: it was deleted (or collected with its sandbox), or the id is "
            f"wrong: {exc.detail or exc.message}"
        ) from exc
    except NotFound as exc:
        what = f"no such file or directory: {path}" if path else exc.message
        raise ToolError(f"{what}{where}") from exc
    except SandboxStateError as exc:
        state = f" (it is {exc.state})" if exc.state else ""
        hint = "; sandbox_resume brings it back" if exc.state == "hibernated" else ""
        raise ToolError(f"sandbox {sandbox_id} is not running{state}{hint}") from exc
    except SnapshotFailed as exc:
        raise ToolError(f"saved state unusable{where}: {exc.detail or exc.message}") from exc
    except FileError as exc:
        subject = f"{path}: " if path else ""
        raise ToolError(f"{subject}{exc.message}{where}") from exc
    except IsorunError as exc:
        raise ToolError(f"{type(exc).__name__}: {exc.message}") from exc
