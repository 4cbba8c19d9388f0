"""`IsorunSandboxSession`: the Agents SDK's `BaseSandboxSession` over one isorun VM.

The SDK drives the session; isorun calls happen where the SDK asks for a primitive:

```
SDK (BaseSandboxSession)            isorun (AsyncSandbox)
start()
  _prepare_backend_workspace  ──▶   files.mkdir(manifest.root)
  runtime helpers, manifest   ──▶   exec(argv)                 (through _exec_internal)
exec(cmd)  → _exec_internal   ──▶   exec(argv, cwd=root, user=, env=manifest env)
read / write                  ──▶   files.read / files.write   (paths confined by the SDK's
                                                                 resolve-workspace-path helper)
persist_workspace             ──▶   tar -cf /tmp/… in the guest, files.read, rm
hydrate_workspace             ──▶   files.write /tmp/….tar, tar -xf, rm
running                       ──▶   refresh().state == "running"
resolve_exposed_port(port)    ──▶   url(port): the edge's host and port, TLS, the token as query
shutdown → _shutdown_backend  ──▶   destroy()
```

Error convention: a command that ran is an `ExecResult` whatever its exit code (the SDK's
shell tool shows the code to the model); a command that ran out of time is `ExecTimeoutError`
(the shell tool reports "timed out" to the model); a failed API call is `ExecTransportError`.
File errors are the SDK's `WorkspaceReadNotFoundError` / `WorkspaceArchive{Read,Write}Error`.

PTY sessions, for the shell tool's `tty=true` and `write_stdin`, are in `_pty.PtyProcesses`.

Exposed ports (`IsorunSandboxClientOptions.exposed_ports`) are isorun's public URLs: each
`resolve_exposed_port` signs a fresh one (`EXPOSED_PORT_URL_TTL_S`), and a failed signing (an
API that serves no URLs, a gone VM) is `ExposedPortUnavailableError`.
"""

from __future__ import annotations

import io
import logging
import shlex
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import isorun
from agents.sandbox.errors import (
    ExecTimeoutError,
    ExecTransportError,
    ExposedPortUnavailableError,
    WorkspaceArchiveReadError,
    WorkspaceArchiveWriteError,
    WorkspaceReadNotFoundError,
    WorkspaceStartError,
    WorkspaceWriteTypeError,
)
from agents.sandbox.session.base_sandbox_session import BaseSandboxSession
from agents.sandbox.session.pty_types import PtyExecUpdate
from agents.sandbox.session.runtime_helpers import (
    RESOLVE_WORKSPACE_PATH_HELPER,
    RuntimeHelperScript,
)
from agents.sandbox.session.sandbox_session_state import SandboxSessionState
from agents.sandbox.session.tar_workspace import shell_tar_exclude_args
from agents.sandbox.types import ExecResult, ExposedPortEndpoint, User
from agents.sandbox.util.tar_utils import UnsafeTarMemberError, validate_tar_bytes
from agents.sandbox.workspace_paths import sandbox_path_str

from isorun_openai_agents._options import IsorunSandboxClientOptions
from isorun_openai_agents._pty import PtyProcesses, exit_status

logger = logging.getLogger(__name__)

# Archive work (tar of a whole workspace under software emulation) gets more time than a
# tool's command, which the model bounds itself through `yield_time_ms`.
ARCHIVE_TIMEOUT_S = 600.0
# A URL outlives the resolve call only as long as the caller keeps it; it resolves again for a
# fresh one, so an hour covers a browser session or a test without leaving tokens good for days.
EXPOSED_PORT_URL_TTL_S = 3600


class IsorunSandboxSessionState(SandboxSessionState):
    """What the SDK serializes to resume a session: the VM's id and how to boot another.

    Attributes:
        sandbox_id: The isorun VM (`sb-...`) this session runs in.
        options: The options it was created with, to boot a replacement on resume when the
            VM is gone.
    """

    type: Literal["isorun"] = "isorun"
    sandbox_id: str
    options: IsorunSandboxClientOptions


class IsorunSandboxSession(BaseSandboxSession):
    """A session in one isorun VM. Made by `IsorunSandboxClient`, not directly.

    Args:
        state: Its serializable state; `state.sandbox_id` is `sandbox`'s id.
        sandbox: The VM, already created or reattached.
    """

    state: IsorunSandboxSessionState

    def __init__(self, *, state: IsorunSandboxSessionState, sandbox: isorun.AsyncSandbox) -> None:
        self.state = state
        self._sandbox = sandbox
        self._pty = PtyProcesses(sandbox)

    @property
    def sandbox(self) -> isorun.AsyncSandbox:
        """The isorun VM, for calls the SDK has no words for (processes, keep-alive)."""
        return self._sandbox

    # --- lifecycle hooks ---

    async def _prepare_backend_workspace(self) -> None:
        root = self._workspace_root_path()
        try:
            await self._sandbox.files.mkdir(sandbox_path_str(root), parents=True)
        except isorun.IsorunError as e:
            raise WorkspaceStartError(path=root, cause=e, retryable=e.retryable) from e

    def _runtime_helpers(self) -> tuple[RuntimeHelperScript, ...]:
        return (RESOLVE_WORKSPACE_PATH_HELPER,)

    def _current_runtime_helper_cache_key(self) -> object | None:
        # A replacement VM (resume after the first one expired) has none of the helpers.
        return self.state.sandbox_id

    async def _validate_path_access(self, path: Path | str, *, for_write: bool = False) -> Path:
        # Symlinks live in the guest, so only the guest can tell where a path really leads.
        return await self._validate_remote_path_access(path, for_write=for_write)

    async def _shutdown_backend(self) -> None:
        try:
            await self._sandbox.destroy()
        except isorun.IsorunError:
            # Shutdown is best-effort by the SDK's contract; the VM expires on its own.
            logger.warning("could not destroy isorun sandbox %s", self.state.sandbox_id)

    # --- the six primitives ---

    async def _exec_internal(
        self,
        *command: str | Path,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's abstract signature
    ) -> ExecResult:
        argv = [str(part) for part in command]
        user: str | None = None
        # BaseSandboxSession.exec expresses `user=` as a `sudo -u NAME --` prefix; isorun
        # runs commands as a user itself, and guest images need not ship sudo.
        if len(argv) >= 4 and argv[:2] == ["sudo", "-u"] and argv[3] == "--":
            user, argv = argv[2], argv[4:]
        try:
            result = await self._sandbox.exec(
                argv,
                cwd=self._exec_cwd(),
                user=user,
                env=await self.state.manifest.environment.resolve(),
                timeout_s=timeout,
            )
        except isorun.IsorunError as e:
            raise ExecTransportError(command=argv, cause=e, retryable=e.retryable) from e
        if result.timed_out:
            raise ExecTimeoutError(
                command=argv, timeout_s=timeout, context={"stdout": result.stdout}
            )
        return ExecResult(
            stdout=result.stdout.encode(),
            stderr=result.stderr.encode(),
            exit_code=exit_status(result.exit_code, result.signal),
        )

    async def read(self, path: Path, *, user: str | User | None = None) -> io.IOBase:
        if user is not None:
            await self._check_read_with_exec(path, user=user)
        workspace_path = await self._validate_path_access(path)
        try:
            data = await self._sandbox.files.read(sandbox_path_str(workspace_path))
        except isorun.SandboxNotFound as e:
            raise WorkspaceArchiveReadError(path=path, cause=e) from e
        except isorun.NotFound as e:
            raise WorkspaceReadNotFoundError(path=path, cause=e) from e
        except isorun.IsorunError as e:
            raise WorkspaceArchiveReadError(path=path, cause=e, retryable=e.retryable) from e
        return io.BytesIO(data)

    async def write(self, path: Path, data: io.IOBase, *, user: str | User | None = None) -> None:
        if user is not None:
            await self._check_write_with_exec(path, user=user)
        payload = data.read()
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(payload, bytes | bytearray):
            raise WorkspaceWriteTypeError(path=path, actual_type=type(payload).__name__)
        workspace_path = await self._validate_path_access(path, for_write=True)
        try:
            await self._sandbox.files.write(
                sandbox_path_str(workspace_path), bytes(payload), parents=True
            )
        except isorun.IsorunError as e:
            raise WorkspaceArchiveWriteError(path=workspace_path, cause=e) from e

    async def running(self) -> bool:
        try:
            info = await self._sandbox.refresh()
        except isorun.IsorunError:
            return False
        return info.state == "running"

    async def persist_workspace(self) -> io.IOBase:
        root = self._workspace_root_path()
        # isorun decodes exec output as text, so the archive travels as a file, not stdout.
        tar_path = f"/tmp/isorun-persist-{self.state.session_id.hex}.tar"
        excludes = " ".join(shell_tar_exclude_args(self._persist_workspace_skip_relpaths()))
        root_arg = shlex.quote(sandbox_path_str(root))
        try:
            await self._run_archive_command(
                f"tar {excludes} -C {root_arg} -cf {tar_path} .", path=root, write=False
            )
            return io.BytesIO(await self._sandbox.files.read(tar_path))
        except isorun.IsorunError as e:
            raise WorkspaceArchiveReadError(path=root, cause=e, retryable=e.retryable) from e
        finally:
            await self._remove_quietly(tar_path)

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        root = self._workspace_root_path()
        raw = data.read()
        if isinstance(raw, str):
            raw = raw.encode()
        if not isinstance(raw, bytes | bytearray):
            raise WorkspaceWriteTypeError(path=root, actual_type=type(raw).__name__)
        try:
            validate_tar_bytes(bytes(raw), allow_external_symlink_targets=False)
        except UnsafeTarMemberError as e:
            raise WorkspaceArchiveWriteError(
                path=root, context={"reason": "unsafe_or_invalid_tar", "member": e.member}, cause=e
            ) from e
        tar_path = f"/tmp/isorun-hydrate-{self.state.session_id.hex}.tar"
        root_arg = shlex.quote(sandbox_path_str(root))
        try:
            await self._sandbox.files.mkdir(sandbox_path_str(root), parents=True)
            await self._sandbox.files.write(tar_path, bytes(raw))
            await self._run_archive_command(
                f"tar -C {root_arg} -xf {tar_path}", path=root, write=True
            )
        except isorun.IsorunError as e:
            raise WorkspaceArchiveWriteError(path=root, cause=e, retryable=e.retryable) from e
        finally:
            await self._remove_quietly(tar_path)

    # --- exposed ports ---

    async def _resolve_exposed_port(self, port: int) -> ExposedPortEndpoint:
        try:
            # Public: the endpoint can carry a query but no header, so a private URL's
            # X-Isorun-Key would have nowhere to go; the signed token alone guards the port.
            url = await self._sandbox.url(port, expires_in=EXPOSED_PORT_URL_TTL_S, public=True)
        except isorun.IsorunError as e:
            raise ExposedPortUnavailableError(
                port=port,
                exposed_ports=self.state.exposed_ports,
                reason="backend_unavailable",
                context={"backend": "isorun", "sandbox_id": self.state.sandbox_id},
                cause=e,
                retryable=e.retryable,
            ) from e
        parts = urlsplit(url.url)
        if parts.hostname is None:
            raise ExposedPortUnavailableError(
                port=port,
                exposed_ports=self.state.exposed_ports,
                reason="backend_unavailable",
                context={"backend": "isorun", "detail": "url_parse_failed", "url": url.origin},
            )
        tls = parts.scheme == "https"
        return ExposedPortEndpoint(
            host=parts.hostname,
            port=parts.port or (443 if tls else 80),
            tls=tls,
            # `isorun_token=...`: the edge takes it from the query and answers with a cookie,
            # so `url_for("http")` opens as it is and the site's own links keep working.
            query=parts.query,
        )

    # --- PTY sessions ---

    def supports_pty(self) -> bool:
        return True

    async def pty_exec_start(
        self,
        *command: str | Path,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature
        shell: bool | list[str] = True,
        user: str | User | None = None,
        tty: bool = False,
        yield_time_s: float | None = None,
        max_output_tokens: int | None = None,
    ) -> PtyExecUpdate:
        """Start `command` and give what it wrote within the yield time; `timeout` bounds the
        start only. A process still running keeps a session id for `pty_write_stdin`."""
        # isorun runs a command as a user itself: no `sudo -u` prefix.
        argv = [str(part) for part in self._prepare_exec_command(*command, shell=shell, user=None)]
        return await self._pty.start(
            argv,
            tty=tty,
            user=user.name if isinstance(user, User) else user,
            cwd=self._exec_cwd(),
            env=await self.state.manifest.environment.resolve(),
            timeout_s=timeout,
            yield_time_s=yield_time_s,
            max_output_tokens=max_output_tokens,
        )

    async def pty_write_stdin(
        self,
        *,
        session_id: int,
        chars: str,
        yield_time_s: float | None = None,
        max_output_tokens: int | None = None,
    ) -> PtyExecUpdate:
        """Type `chars` into the session's terminal (empty: only poll) and give the output that
        came within the yield time."""
        return await self._pty.write(
            session_id, chars, yield_time_s=yield_time_s, max_output_tokens=max_output_tokens
        )

    async def pty_terminate_all(self) -> None:
        """Hang up every shell and kill every piped process this session started."""
        await self._pty.terminate_all()

    # --- helpers ---

    def _exec_cwd(self) -> str | None:
        return self.state.manifest.root if self.state.workspace_root_ready else None

    async def _run_archive_command(self, command: str, *, path: Path, write: bool) -> None:
        result = await self._sandbox.exec(command, cwd="/", timeout_s=ARCHIVE_TIMEOUT_S)
        if result.ok:
            return
        context = {"exit_code": result.exit_code, "stderr": result.stderr[-4096:]}
        if write:
            raise WorkspaceArchiveWriteError(path=path, context=context)
        raise WorkspaceArchiveReadError(path=path, context=context)

    async def _remove_quietly(self, path: str) -> None:
        try:
            await self._sandbox.files.remove(path)
        except isorun.IsorunError:
            # A leftover archive in /tmp is harmless; the error that matters is already raised.
            logger.debug("could not remove %s from sandbox %s", path, self.state.sandbox_id)
