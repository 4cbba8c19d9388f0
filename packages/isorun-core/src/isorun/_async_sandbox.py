"""`AsyncSandbox`: one microVM, driven from asyncio; the twin of `Sandbox`.

A constructor cannot await, so creation is `AsyncSandbox.create(...)` (also reachable as
`Sandbox.create(...)`, the landing page's spelling). It returns a `SandboxCreation`, which is
both awaitable and an async context manager:

```
sb = await AsyncSandbox.create("python")           POST; destroy() is up to the caller
async with AsyncSandbox.create("python") as sb:     POST on enter, DELETE on exit
sb = await AsyncSandbox.connect(id)                 GET: attach to an existing sandbox
sb = await AsyncSandbox.from_snapshot(snap_id)      POST {"snapshot"}: continue from a snapshot
clones = await sb.fork(2)                           clones sharing sb's client
url = await sb.url(8000)                            a signed https URL to a server on port 8000
```

Method names follow httpx's AsyncClient: the coroutines keep the sync names (`await sb.exec`,
`await sb.destroy`, `await sb.files.read`), the async iterators too (`async for e in
sb.exec_stream(...)`), and only `aclose` carries the `a` prefix.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType

import httpx

from isorun import _routes
from isorun._base import (
    USE_CLIENT_DEFAULT,
    ClientLease,
    Page,
    SecretArg,
    TimeoutArg,
    logger,
    own_client_timeout,
    parse_model,
)
from isorun._client import AsyncClient
from isorun._errors import IsorunError, SandboxNotFound, UsageError
from isorun._files import AsyncFiles
from isorun._models import ExecEvent, ExecResult, ProcessInfo, SandboxInfo, SandboxUrl, Snapshot
from isorun._ndjson import ExecCollector, ExecStreamDecoder, OutputCallback
from isorun._network import AsyncNetwork
from isorun._pending import Pending
from isorun._shells import AsyncShells

DEFAULT_PAGE_SIZE = 50


def _client_for(
    client: AsyncClient | None,
    *,
    api_key: str | None,
    api_url: str | None,
    transport: httpx.AsyncBaseTransport | None,
    timeout: TimeoutArg,
) -> tuple[AsyncClient, bool]:
    own_timeout = own_client_timeout(
        client, api_key=api_key, api_url=api_url, transport=transport, timeout=timeout
    )
    if client is not None:
        return client, False
    client = AsyncClient(api_key=api_key, api_url=api_url, transport=transport, timeout=own_timeout)
    return client, True


class SandboxCreation(Pending["AsyncSandbox"]):
    """A pending `AsyncSandbox.create`: await it, or enter it with `async with` (which closes
    the sandbox on exit). Nothing is sent until then, and it can be used once."""

    _what = "this AsyncSandbox.create(...)"

    async def _end(
        self,
        value: AsyncSandbox,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await value.__aexit__(exc_type, exc, tb)


class AsyncSandbox:
    """A sandbox driven from asyncio. Get one from `create` or `connect`.

    Args:
        client: The client it talks through.
        info: Its description.
        owns_client: Close `client` on `aclose()` / `destroy()` (once every clone `fork`
            made from this sandbox has closed too).
    """

    files: AsyncFiles
    """The sandbox's filesystem."""
    network: AsyncNetwork
    """The sandbox's egress policy and secrets: `await get()`, `await update(...)`."""
    shells: AsyncShells
    """The sandbox's persistent shells: `await create()`, `async with attach(id)`, ..."""

    def __init__(
        self, client: AsyncClient, info: SandboxInfo, *, owns_client: bool = False
    ) -> None:
        self._client = client
        self._lease: ClientLease | None = ClientLease(owned=owns_client)
        self._info = info
        self._destroyed = False
        self.files = AsyncFiles(client, info.id)
        self.network = AsyncNetwork(client, info.id)
        self.shells = AsyncShells(client, info.id)

    @classmethod
    def create(
        cls,
        image: str = "python",
        *,
        vcpus: int = 1,
        memory_mib: int = 1024,
        timeout_s: int = 300,
        env: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        snapshot: str | None = None,
        auto_hibernate_s: int | None = None,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] | None = None,
        profile: str | None = None,
        secrets: Sequence[SecretArg] | None = None,
        api_key: str | None = None,
        api_url: str | None = None,
        client: AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> SandboxCreation:
        """Create a sandbox: `await AsyncSandbox.create(...)` or `async with ... as sb`.

        Arguments are those of `Sandbox()`, with an `AsyncClient` and an async transport.

        Returns:
            An awaitable giving the `AsyncSandbox`; as an async context manager it also
            destroys the sandbox on exit.

        Raises:
            The errors of `Sandbox()`, when awaited or entered.
        """
        req = _routes.create_sandbox(
            image=image,
            vcpus=vcpus,
            memory_mib=memory_mib,
            timeout_s=timeout_s,
            env=env,
            metadata=metadata,
            labels=labels,
            allow=allow,
            deny=deny,
            profile=profile,
            secrets=secrets,
            snapshot=snapshot,
            auto_hibernate_s=auto_hibernate_s,
        )

        async def create() -> AsyncSandbox:
            http, owns = _client_for(
                client, api_key=api_key, api_url=api_url, transport=transport, timeout=timeout
            )
            try:
                info = parse_model(SandboxInfo, await http.send(req))
            except BaseException:
                if owns:
                    await http.aclose()
                raise
            return cls(http, info, owns_client=owns)

        return SandboxCreation(create)

    @classmethod
    def from_snapshot(
        cls,
        snapshot_id: str,
        *,
        timeout_s: int = 300,
        env: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        auto_hibernate_s: int | None = None,
        api_key: str | None = None,
        api_url: str | None = None,
        client: AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> SandboxCreation:
        """`create(snapshot=snapshot_id, ...)`; see `Sandbox.from_snapshot`.

        Raises:
            SnapshotNotFound, SnapshotFailed: When awaited or entered.
        """
        return cls.create(
            snapshot=snapshot_id,
            timeout_s=timeout_s,
            env=env,
            metadata=metadata,
            labels=labels,
            auto_hibernate_s=auto_hibernate_s,
            api_key=api_key,
            api_url=api_url,
            client=client,
            transport=transport,
            timeout=timeout,
        )

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        *,
        api_key: str | None = None,
        api_url: str | None = None,
        client: AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,  # noqa: ASYNC109 - the client's HTTP timeout
    ) -> AsyncSandbox:
        """Attach to an existing sandbox; arguments as for `Sandbox.connect`.

        Raises:
            SandboxNotFound: No such sandbox for this key's tenant.
            UsageError: No API key, or connection options beside `client=`.
        """
        http, owns = _client_for(
            client, api_key=api_key, api_url=api_url, transport=transport, timeout=timeout
        )
        try:
            info = parse_model(SandboxInfo, await http.send(_routes.get_sandbox(sandbox_id)))
        except BaseException:
            if owns:
                await http.aclose()
            raise
        return cls(http, info, owns_client=owns)

    @classmethod
    async def list(
        cls,
        *,
        state: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        api_key: str | None = None,
        api_url: str | None = None,
        client: AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,  # noqa: ASYNC109 - the client's HTTP timeout
    ) -> AsyncIterator[SandboxInfo]:
        """Iterate (`async for`) over the tenant's sandboxes; arguments as for `Sandbox.list`.

        Raises:
            UsageError: No API key, or connection options beside `client=`.
            AuthenticationError: The key was refused.
        """
        http, owns = _client_for(
            client, api_key=api_key, api_url=api_url, transport=transport, timeout=timeout
        )
        try:
            req = _routes.list_sandboxes(state=state, labels=labels, page_size=page_size)
            async for info in http.paginate(req, SandboxInfo):
                yield info
        finally:
            if owns:
                await http.aclose()

    @property
    def id(self) -> str:
        """The sandbox id (`sb-...`)."""
        return self._info.id

    @property
    def info(self) -> SandboxInfo:
        """The description from the last answer about this sandbox (see `refresh`)."""
        return self._info

    async def refresh(self) -> SandboxInfo:
        """Fetch the sandbox's current description into `info`.

        Raises:
            SandboxNotFound: The sandbox is gone (deleted or expired).
        """
        answer = await self._client.send(_routes.get_sandbox(self.id))
        self._info = parse_model(SandboxInfo, answer)
        return self._info

    async def keep_alive(self, timeout_s: int) -> SandboxInfo:
        """Move the sandbox's expiry to `timeout_s` seconds from now.

        Raises:
            SandboxNotFound: The sandbox is gone.
            SandboxStateError: The sandbox is not running.
        """
        answer = await self._client.send(_routes.keep_alive(self.id, timeout_s))
        self._info = parse_model(SandboxInfo, answer)
        return self._info

    async def fork(
        self, n: int = 1, *, timeout_s: int | None = None
    ) -> builtins.list[AsyncSandbox]:
        """Clone this running sandbox `n` times; arguments and errors as `Sandbox.fork`.

        Returns:
            Handles on the clones, sharing this sandbox's client.
        """
        answer = await self._client.send(_routes.fork_sandbox(self.id, n, timeout_s))
        clones = []
        for info in parse_model(Page[SandboxInfo], answer).data:
            if self._lease is None:
                raise UsageError("this sandbox handle is closed")
            clone = type(self)(self._client, info)
            clone._lease = self._lease.share()
            clones.append(clone)
        return clones

    async def snapshot(self, *, keep: bool = False, name: str | None = None) -> Snapshot:
        """Save this running sandbox; arguments and errors as `Sandbox.snapshot`."""
        answer = await self._client.send(_routes.create_snapshot(self.id, keep=keep, name=name))
        return parse_model(Snapshot, answer)

    async def url(self, port: int, *, expires_in: int = 3600, public: bool = True) -> SandboxUrl:
        """A signed https URL to a server on `port` in this sandbox; arguments and errors as
        `Sandbox.url`."""
        req = _routes.create_url(self.id, port, expires_in_s=expires_in, public=public)
        return parse_model(SandboxUrl, await self._client.send(req))

    async def hibernate(self) -> SandboxInfo:
        """Save the sandbox to disk and stop its VM; errors as `Sandbox.hibernate`."""
        answer = await self._client.send(_routes.hibernate_sandbox(self.id))
        self._info = parse_model(SandboxInfo, answer)
        return self._info

    async def resume(self) -> SandboxInfo:
        """Bring a hibernated sandbox back; errors as `Sandbox.resume`."""
        answer = await self._client.send(_routes.resume_sandbox(self.id))
        self._info = parse_model(SandboxInfo, answer)
        return self._info

    async def exec(
        self,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout_s: float | None = None,
        stdin: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        check: bool = False,
    ) -> ExecResult:
        """Run a command to completion; arguments and errors as for `Sandbox.exec`.

        The callbacks are plain functions, called on the event loop as output arrives.

        Raises:
            ExecFailed: With `check`, the command exited non-zero or was killed.
            ExecTimeout: With `check`, the command ran past `timeout_s`.
            SandboxNotFound: The sandbox is gone.
            SandboxStateError: The sandbox is not running.
            OutcomeUnknown: The answer was lost: the command may have run.
        """
        if on_stdout is None and on_stderr is None:
            req = _routes.exec_command(
                self.id,
                command,
                env=env,
                cwd=cwd,
                user=user,
                timeout_s=timeout_s,
                stdin=stdin,
                stream=False,
                client_timeout=self._client.timeout,
            )
            result = parse_model(ExecResult, await self._client.send(req))
            result._sandbox_id = self.id
        else:
            collector = ExecCollector(on_stdout=on_stdout, on_stderr=on_stderr, sandbox_id=self.id)
            events = self.exec_stream(
                command, env=env, cwd=cwd, user=user, timeout_s=timeout_s, stdin=stdin
            )
            async for event in events:
                collector.add(event)
            result = collector.result()
        return result.check() if check else result

    async def run(
        self,
        *argv: str,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        check: bool = False,
    ) -> ExecResult:
        """Run `argv` (no shell): `await sb.run("python", "-c", "print(2**32)")`.

        Raises:
            UsageError: No argv.
        """
        if not argv:
            raise UsageError("run() needs a program to run")
        return await self.exec(list(argv), env=env, cwd=cwd, timeout_s=timeout_s, check=check)

    async def exec_stream(
        self,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout_s: float | None = None,
        stdin: str | None = None,
    ) -> AsyncIterator[ExecEvent]:
        """Run a command and yield its events as they happen (`async for`); see `Sandbox`.

        Stopping early leaves the connection open until the generator is finalised: wrap it
        in `contextlib.aclosing` to close at once.

        Raises:
            APIError: The server failed after the start, or refused the call.
            ProtocolError: The stream was malformed or ended before its exit.
            OutcomeUnknown: The connection broke mid-stream.
        """
        req = _routes.exec_command(
            self.id,
            command,
            env=env,
            cwd=cwd,
            user=user,
            timeout_s=timeout_s,
            stdin=stdin,
            stream=True,
            client_timeout=self._client.timeout,
        )
        decoder = ExecStreamDecoder(sandbox_id=self.id)
        async with self._client.stream(req) as response:
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    yield event
            for event in decoder.close():
                yield event

    async def processes(self) -> builtins.list[ProcessInfo]:
        """Return the processes started through the API, running or finished.

        Raises:
            SandboxNotFound: The sandbox is gone.
        """
        req = _routes.list_processes(self.id)
        return [process async for process in self._client.paginate(req, ProcessInfo)]

    async def signal(self, pid: int, signal: int) -> None:
        """Send `signal` to the process `pid`.

        Raises:
            NotFound: No such process.
            SandboxNotFound: The sandbox is gone.
        """
        await self._client.send(_routes.signal_process(self.id, pid, signal))

    async def destroy(self) -> None:
        """Delete the sandbox, then `aclose()`; a second call does nothing.

        A sandbox already gone (expired, deleted elsewhere) counts as deleted.

        Raises:
            TransportError: The API could not be reached; the handle stays usable to retry.
            APIError: The API refused.
        """
        if self._destroyed:
            return
        try:
            await self._client.send(_routes.delete_sandbox(self.id))
        except SandboxNotFound:
            logger.debug("sandbox %s was already gone", self.id)
        self._destroyed = True
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if this sandbox made its own (and no clone of it still uses it);
        the sandbox itself keeps running."""
        lease, self._lease = self._lease, None
        if lease is not None and lease.release():
            await self._client.aclose()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.destroy()
        except IsorunError:
            if exc is None:
                raise
            # Keep the with-block's own error: it is the one the caller needs to see.
            logger.warning("could not destroy sandbox %s", self.id, exc_info=True)
        finally:
            await self.aclose()

    def __repr__(self) -> str:
        return (
            f"AsyncSandbox(id={self.id!r}, image={self._info.image!r}, state={self._info.state!r})"
        )
