"""`Sandbox`: one microVM, driven synchronously.

```
Sandbox("python")          POST /v1/sandboxes   eager: the VM exists when the call returns
  with ... as sb:          -> sb                   (nothing more to do on enter)
  sb.exec / run / files    the VM's API
  exit of the with-block   DELETE (also when the block raised), then close its own client
Sandbox.connect(id)        GET: a handle on an existing sandbox (destroy() still deletes it)
Sandbox.from_snapshot(id)  POST {"snapshot"}: a new sandbox continuing from a snapshot
sb.network.get / update    GET / PATCH its egress policy (secrets: names only, never values)
sb.url(port)               POST .../urls: a signed https URL to a server listening on port
sb.shells.create / attach  persistent shells on a terminal, attached over a WebSocket
sb.fork(n) / snapshot()    clones (handles sharing this one's client) / a saved state
sb.hibernate() / resume()  to disk and back; an exec on a hibernated sandbox resumes it
sb.close()                 release the HTTP connections only; the VM lives to its TTL
```
A client a sandbox made for itself is shared with the clones `fork` returns, and closed by the
last of them to close.

The async twin is `AsyncSandbox` (`_async_sandbox`); both build their requests with `_routes`
and parse answers with `_base` / `_ndjson`, and only send here.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

import httpx

from isorun import _routes
from isorun._async_sandbox import AsyncSandbox, SandboxCreation
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
from isorun._client import AsyncClient, Client
from isorun._errors import IsorunError, SandboxNotFound, UsageError
from isorun._files import Files
from isorun._models import ExecEvent, ExecResult, ProcessInfo, SandboxInfo, SandboxUrl, Snapshot
from isorun._ndjson import ExecCollector, ExecStreamDecoder, OutputCallback
from isorun._network import Network
from isorun._shells import Shells

DEFAULT_PAGE_SIZE = 50


def _client_for(
    client: Client | None,
    *,
    api_key: str | None,
    api_url: str | None,
    transport: httpx.BaseTransport | None,
    timeout: TimeoutArg,
) -> tuple[Client, bool]:
    own_timeout = own_client_timeout(
        client, api_key=api_key, api_url=api_url, transport=transport, timeout=timeout
    )
    if client is not None:
        return client, False
    return Client(api_key=api_key, api_url=api_url, transport=transport, timeout=own_timeout), True


class Sandbox:
    """A sandbox (a microVM booted from an OCI image), created when constructed.

    `Sandbox(...)` creates the sandbox before it returns (so `with Sandbox("python") as sb`
    needs nothing more on enter), and the with-block's exit destroys it, also when the block
    raised. Without a with-block, call `destroy()` yourself, or the sandbox lives until its
    `timeout_s` runs out.

    Args:
        image: A short name the deployment maps ("python", "node", "ubuntu") or a pinned OCI
            reference; sent as given, the backend resolves it.
        vcpus: Virtual CPUs, 1..16.
        memory_mib: Memory, 128..16384 MiB.
        timeout_s: Time to live from now; `keep_alive` extends it.
        env: Default environment of every exec.
        metadata: Free-form strings, returned as they are.
        labels: Strings to filter `Sandbox.list` by.
        snapshot: Start from this snapshot (`snap-...`) instead of an image: its files and
            processes as saved. The snapshot fixes the image, vCPUs and memory, so `image`,
            `vcpus` and `memory_mib` are then not sent. Its network is that of the snapshot's
            sandbox unless a network option is given.
        auto_hibernate_s: Let the backend hibernate the sandbox after this many idle seconds
            (no exec, file or process call); the next call resumes it.
        allow: Egress allowed on top of `profile`: host names (`pypi.org`), wildcards
            (`*.githubusercontent.com`), IPv4 addresses and CIDRs. Allow wins over deny.
            Without any network option the sandbox has no egress at all.
        deny: Egress denied: the same kinds of entry (`["0.0.0.0/0"]` closes everything the
            profile opens but what `allow` lists).
        profile: The base rules: "locked-down" (the default: nothing), "unrestricted",
            "claude-code", "openai", "data-science", "web-dev", or the deployment's own.
        secrets: `Secret`s (or dicts of their fields) the host's proxy injects into requests
            to their `upstream`; the guest sees only a placeholder. Fixed at create.
        api_key: API key for a client of its own; `ISORUN_API_KEY` when None.
        api_url: API URL for a client of its own; `ISORUN_API_URL` when None.
        client: A `Client` to share with other sandboxes (then pass no connection options);
            it stays open after `destroy()`.
        transport: An httpx transport for a client of its own (`isorun.testing.FakeBackend`).
        timeout: HTTP timeout for a client of its own (see `Client`).

    Raises:
        UsageError: No API key, or connection options beside `client=`.
        ImageRejected: The image is unknown, floating (latest), or unsafe.
        ImageUnavailable: Its registry could not be reached.
        InvalidRequest: A value is out of range, or the network is refused (an unknown
            profile, which the message lists the known ones for; a bad entry or secret).
        QuotaExceeded: The tenant may not create more sandboxes.
        SnapshotNotFound: `snapshot` does not exist (for this tenant).
        SnapshotFailed: The snapshot's state could not be restored.
        AuthenticationError: The key was refused.
        TransportError: The API could not be reached (after retries).

    Example:
        >>> with Sandbox("python") as sb:  # doctest: +SKIP
        ...     print(sb.exec("python -V").stdout)
    """

    files: Files
    """The sandbox's filesystem."""
    network: Network
    """The sandbox's egress policy and secrets: `get()`, `update(...)`."""
    shells: Shells
    """The sandbox's persistent shells: `create()`, `list()`, `attach(id)`, ..."""

    def __init__(
        self,
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
        client: Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> None:
        http, owns = _client_for(
            client, api_key=api_key, api_url=api_url, transport=transport, timeout=timeout
        )
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
        try:
            info = parse_model(SandboxInfo, http.send(req))
        except BaseException:
            if owns:
                http.close()
            raise
        self._bind(http, ClientLease(owned=owns), info)

    def _bind(self, client: Client, lease: ClientLease, info: SandboxInfo) -> None:
        self._client = client
        self._lease: ClientLease | None = lease
        self._info = info
        self._destroyed = False
        self.files = Files(client, info.id)
        self.network = Network(client, info.id)
        self.shells = Shells(client, info.id)

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
        client: Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> Sandbox:
        """A new sandbox continuing from a snapshot: `Sandbox(snapshot=snapshot_id, ...)`.

        It runs on the node that holds the snapshot, with the snapshot's image, vCPUs and
        memory, its files and processes as saved, its own id and hostname, and the network
        (policy and secrets) of the sandbox the snapshot was taken of; to give it another,
        use `Sandbox(snapshot=snapshot_id, allow=..., ...)`.

        Raises:
            SnapshotNotFound: No such snapshot for this key's tenant.
            SnapshotFailed: Its state could not be restored.
            QuotaExceeded, ServiceUnavailable: As for `Sandbox()`.
        """
        return cls(
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
    def connect(
        cls,
        sandbox_id: str,
        *,
        api_key: str | None = None,
        api_url: str | None = None,
        client: Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> Sandbox:
        """Attach to an existing sandbox.

        Args:
            sandbox_id: Its id (`sb-...`).
            api_key: As for `Sandbox()`.
            api_url: As for `Sandbox()`.
            client: As for `Sandbox()`.
            transport: As for `Sandbox()`.
            timeout: As for `Sandbox()`.

        Returns:
            A handle; leaving its with-block or `destroy()` deletes the sandbox.

        Raises:
            SandboxNotFound: No such sandbox for this key's tenant.
            UsageError: No API key, or connection options beside `client=`.
        """
        http, owns = _client_for(
            client, api_key=api_key, api_url=api_url, transport=transport, timeout=timeout
        )
        try:
            info = parse_model(SandboxInfo, http.send(_routes.get_sandbox(sandbox_id)))
        except BaseException:
            if owns:
                http.close()
            raise
        sandbox = cls.__new__(cls)
        sandbox._bind(http, ClientLease(owned=owns), info)
        return sandbox

    @classmethod
    def list(
        cls,
        *,
        state: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        api_key: str | None = None,
        api_url: str | None = None,
        client: Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> Iterator[SandboxInfo]:
        """Iterate over the tenant's sandboxes, fetching pages by cursor as needed.

        Args:
            state: Only sandboxes in this state ("running", "stopped", "failed").
            labels: Only sandboxes carrying all these labels.
            page_size: Sandboxes per request, 1..200.
            api_key: As for `Sandbox()`.
            api_url: As for `Sandbox()`.
            client: As for `Sandbox()`.
            transport: As for `Sandbox()`.
            timeout: As for `Sandbox()`.

        Yields:
            Each sandbox's description; `Sandbox.connect(info.id)` gives a handle.

        Raises:
            UsageError: No API key, or connection options beside `client=`.
            AuthenticationError: The key was refused.
        """
        http, owns = _client_for(
            client, api_key=api_key, api_url=api_url, transport=transport, timeout=timeout
        )
        try:
            req = _routes.list_sandboxes(state=state, labels=labels, page_size=page_size)
            yield from http.paginate(req, SandboxInfo)
        finally:
            if owns:
                http.close()

    @staticmethod
    def create(
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
        """Create a sandbox from async code: `sb = await Sandbox.create()`.

        The same as `AsyncSandbox.create` (so `client` must be an `AsyncClient` and
        `transport` async): it exists so the awaited form reads as on isorun's landing page.
        Sync code constructs `Sandbox(...)` instead.

        Returns:
            An awaitable (and async context manager) giving an `AsyncSandbox`.
        """
        return AsyncSandbox.create(
            image,
            vcpus=vcpus,
            memory_mib=memory_mib,
            timeout_s=timeout_s,
            env=env,
            metadata=metadata,
            labels=labels,
            snapshot=snapshot,
            auto_hibernate_s=auto_hibernate_s,
            allow=allow,
            deny=deny,
            profile=profile,
            secrets=secrets,
            api_key=api_key,
            api_url=api_url,
            client=client,
            transport=transport,
            timeout=timeout,
        )

    @property
    def id(self) -> str:
        """The sandbox id (`sb-...`)."""
        return self._info.id

    @property
    def info(self) -> SandboxInfo:
        """The description from the last answer about this sandbox (see `refresh`)."""
        return self._info

    def refresh(self) -> SandboxInfo:
        """Fetch the sandbox's current description (state, expiry) into `info`.

        Raises:
            SandboxNotFound: The sandbox is gone (deleted or expired).
        """
        self._info = parse_model(SandboxInfo, self._client.send(_routes.get_sandbox(self.id)))
        return self._info

    def keep_alive(self, timeout_s: int) -> SandboxInfo:
        """Move the sandbox's expiry to `timeout_s` seconds from now.

        Returns:
            The description with the new `expires_at` (also in `info`).

        Raises:
            SandboxNotFound: The sandbox is gone.
            SandboxStateError: The sandbox is not running.
        """
        answer = self._client.send(_routes.keep_alive(self.id, timeout_s))
        self._info = parse_model(SandboxInfo, answer)
        return self._info

    def fork(self, n: int = 1, *, timeout_s: int | None = None) -> builtins.list[Sandbox]:
        """Clone this running sandbox `n` times, as it is now: files, running processes.

        Each clone is a new sandbox (its own id, hostname, entropy and machine-id) with this
        one's labels, env and metadata, and `forked_from` set to this id. This sandbox pauses
        for one save and continues. All clones or none; they count against the quota.

        Args:
            n: Clones, 1..16.
            timeout_s: The clones' time to live; None: this sandbox's expiry.

        Returns:
            Handles on the clones. They share this sandbox's client; destroying them (or
            their with-blocks) deletes them.

        Raises:
            SandboxStateError: This sandbox is not running (hibernated ones included).
            QuotaExceeded: The clones do not fit the tenant's quota.
            ServiceUnavailable: Its node has no room for them.
            SnapshotFailed: The save or a restore failed; this sandbox is unharmed.
            OutcomeUnknown: The answer was lost: clones may exist (see `Sandbox.list`).
        """
        answer = self._client.send(_routes.fork_sandbox(self.id, n, timeout_s))
        clones = []
        for info in parse_model(Page[SandboxInfo], answer).data:
            clone = type(self).__new__(type(self))
            clone._bind(self._client, self._share_lease(), info)
            clones.append(clone)
        return clones

    def _share_lease(self) -> ClientLease:
        if self._lease is None:
            raise UsageError("this sandbox handle is closed")
        return self._lease.share()

    def snapshot(self, *, keep: bool = False, name: str | None = None) -> Snapshot:
        """Save this running sandbox (it pauses for the save, then continues).

        Args:
            keep: Keep the snapshot when this sandbox is deleted (else it goes with it).
            name: A name to recognise it by.

        Returns:
            The snapshot; start sandboxes from it with `Sandbox.from_snapshot(snap.id)`.

        Raises:
            SandboxStateError: The sandbox is not running (hibernated ones included).
            SnapshotFailed: The save failed (e.g. the node's disk is full); it is unharmed.
        """
        answer = self._client.send(_routes.create_snapshot(self.id, keep=keep, name=name))
        return parse_model(Snapshot, answer)

    def url(self, port: int, *, expires_in: int = 3600, public: bool = True) -> SandboxUrl:
        """A signed https URL that reaches a server listening on `port` in this sandbox.

        The server may listen on the guest's loopback (`--bind 127.0.0.1`); the API's edge
        carries each request to it. Nothing is opened or stored by this call: the URL is
        signed, and it works while the sandbox exists, until `expires_at`. A hibernated
        sandbox is resumed by the first request to it.

        Args:
            port: The port in the sandbox, 1..65535.
            expires_in: Seconds the URL works for (at most 7 days unless the server says
                otherwise).
            public: True: the URL alone lets requests in. False: each request also needs an
                API key of this sandbox's tenant in the `X-Isorun-Key` header.

        Returns:
            The URL (`str()` of it is `url`, ready to open) with its token and expiry.

        Raises:
            SandboxNotFound: The sandbox is gone.
            Conflict: The API serves no URLs (`isorun up --urls off`, or no edge configured).
            InvalidRequest: `port` or `expires_in` is out of range.
        """
        req = _routes.create_url(self.id, port, expires_in_s=expires_in, public=public)
        return parse_model(SandboxUrl, self._client.send(req))

    def hibernate(self) -> SandboxInfo:
        """Save the sandbox to disk and stop its VM: no usage, no quota until `resume`.

        Returns:
            The description, `state` "hibernated" (also in `info`).

        Raises:
            SandboxStateError: The sandbox is stopped.
            SnapshotFailed: The save failed; the sandbox keeps running.
        """
        self._info = parse_model(SandboxInfo, self._client.send(_routes.hibernate_sandbox(self.id)))
        return self._info

    def resume(self) -> SandboxInfo:
        """Bring a hibernated sandbox back, processes and files as they were. Any exec or file
        call on a hibernated sandbox does this first by itself.

        Returns:
            The description, `state` "running" (also in `info`).

        Raises:
            Conflict: The sandbox is stopped.
            QuotaExceeded: Resuming does not fit the tenant's quota.
            SnapshotFailed: Its saved state is missing or corrupt; it stays hibernated.
        """
        self._info = parse_model(SandboxInfo, self._client.send(_routes.resume_sandbox(self.id)))
        return self._info

    def exec(
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
        """Run a command to completion and return its result. Never retried.

        A non-zero exit or a timeout is a result, not an error, unless `check` is set.

        Args:
            command: A string runs under `/bin/sh -c`; a sequence is the argv.
            env: Environment on top of the sandbox's.
            cwd: Working directory.
            user: User to run as.
            timeout_s: Kill the command after this long (`timed_out` is then true); None for
                no limit. The HTTP read timeout grows by as much.
            stdin: Text fed to the command's stdin, which is then closed.
            on_stdout: Called with stdout text as it arrives (the call then streams).
            on_stderr: Called with stderr text as it arrives.
            check: Raise instead of returning a failed result.

        Returns:
            Exit status and output (the whole output, also when callbacks saw it).

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
            result = parse_model(ExecResult, self._client.send(req))
            result._sandbox_id = self.id
        else:
            collector = ExecCollector(on_stdout=on_stdout, on_stderr=on_stderr, sandbox_id=self.id)
            events = self.exec_stream(
                command, env=env, cwd=cwd, user=user, timeout_s=timeout_s, stdin=stdin
            )
            for event in events:
                collector.add(event)
            result = collector.result()
        return result.check() if check else result

    def run(
        self,
        *argv: str,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        check: bool = False,
    ) -> ExecResult:
        """Run `argv` (no shell): `sb.run("python", "-c", "print(2**32)")`.

        The same as `exec(list(argv), ...)`; see `exec` for the arguments and errors.

        Raises:
            UsageError: No argv.
        """
        if not argv:
            raise UsageError("run() needs a program to run")
        return self.exec(list(argv), env=env, cwd=cwd, timeout_s=timeout_s, check=check)

    def exec_stream(
        self,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout_s: float | None = None,
        stdin: str | None = None,
    ) -> Iterator[ExecEvent]:
        """Run a command and yield its events as they happen. Never retried.

        The request goes out when iteration starts. Stopping early closes the connection
        (the command goes on); use `contextlib.closing` to close at once rather than when the
        iterator is collected.

        Args:
            command: As for `exec`.
            env: As for `exec`.
            cwd: As for `exec`.
            user: As for `exec`.
            timeout_s: As for `exec`.
            stdin: As for `exec`.

        Yields:
            `StartEvent`, then `OutputEvent`s (raw bytes), then one `ExitEvent`.

        Raises:
            APIError: The server failed after the start (the stream's `error` line), or
                refused the call (`SandboxNotFound`, `SandboxStateError`, ...).
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
        with self._client.stream(req) as response:
            for chunk in response.iter_bytes():
                yield from decoder.feed(chunk)
            yield from decoder.close()

    def processes(self) -> builtins.list[ProcessInfo]:
        """Return the processes started through the API, running or finished.

        Raises:
            SandboxNotFound: The sandbox is gone.
        """
        return [*self._client.paginate(_routes.list_processes(self.id), ProcessInfo)]

    def signal(self, pid: int, signal: int) -> None:
        """Send `signal` (e.g. `signal.SIGTERM`) to the process `pid`.

        Raises:
            NotFound: No such process.
            SandboxNotFound: The sandbox is gone.
        """
        self._client.send(_routes.signal_process(self.id, pid, signal))

    def destroy(self) -> None:
        """Delete the sandbox, then `close()`; a second call does nothing.

        A sandbox already gone (expired, deleted elsewhere) counts as deleted.

        Raises:
            TransportError: The API could not be reached; the handle stays usable to retry.
            APIError: The API refused.
        """
        if self._destroyed:
            return
        try:
            self._client.send(_routes.delete_sandbox(self.id))
        except SandboxNotFound:
            logger.debug("sandbox %s was already gone", self.id)
        self._destroyed = True
        self.close()

    def close(self) -> None:
        """Close the client if this sandbox made its own (and no clone of it still uses it);
        the sandbox itself keeps running."""
        lease, self._lease = self._lease, None
        if lease is not None and lease.release():
            self._client.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.destroy()
        except IsorunError:
            if exc is None:
                raise
            # Keep the with-block's own error: it is the one the caller needs to see.
            logger.warning("could not destroy sandbox %s", self.id, exc_info=True)
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, image={self._info.image!r}, state={self._info.state!r})"
