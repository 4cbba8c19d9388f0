"""`ThreadSandboxes`: one isorun sandbox per LangGraph `thread_id`.

```
config["configurable"]["thread_id"]     (passed in, or langgraph.config.get_config())
        │
ThreadSandboxes.get(config) ── first call for a thread ──> Sandbox(image, metadata=thread id)
        │                   ── later calls ─────────────> the same live Sandbox
release(thread_id)          destroy that thread's VM
close() / with-block exit   destroy every VM, then close the shared client
```

Live handles stay in this object, never in graph state: a checkpointer saves channel values
only, and a `Sandbox` holds an HTTP client that neither serializes nor survives a restore. The
VM's filesystem is a side effect outside the checkpoint, so time travel does not roll it back.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

import httpx
from isorun import Client, Sandbox, Secret, UsageError
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.config import get_config

from isorun_langgraph import _tools

THREAD_METADATA_KEY = "langgraph_thread_id"
"""Sandbox metadata key holding the thread id, to find a thread's VM in `Sandbox.list`."""


def thread_id_of(config: RunnableConfig | None = None) -> str:
    """Return the `thread_id` of `config`, or of the running graph's config when None.

    Raises:
        UsageError: The config has no `configurable.thread_id`.
        RuntimeError: `config` is None outside a running graph or runnable.
    """
    configurable = (config if config is not None else get_config()).get("configurable", {})
    thread_id = configurable.get("thread_id")
    if thread_id is None:
        raise UsageError(
            "no thread_id in the config: invoke the graph with "
            'config={"configurable": {"thread_id": ...}}'
        )
    return str(thread_id)


class ThreadSandboxes:
    """Sandboxes keyed by LangGraph `thread_id`, created on first use and reused after.

    Thread-safe: `ToolNode` runs parallel tool calls on worker threads, and two calls of one
    conversation must still get one VM. Every sandbox shares one HTTP client.

    Args:
        image: The image of every sandbox (see `isorun.Sandbox`).
        vcpus: Virtual CPUs of each sandbox.
        memory_mib: Memory of each sandbox.
        timeout_s: Time to live of each sandbox from its creation; a conversation idle for
            longer finds its VM gone.
        env: Default environment of every exec.
        labels: Labels of every sandbox (the thread id goes into metadata).
        allow: Egress every sandbox may reach (host names, wildcards, CIDRs); with none of
            `allow`, `deny`, `profile` the sandboxes have no network (see `isorun.Sandbox`).
        deny: Egress closed to every sandbox.
        profile: The egress profile of every sandbox ("openai", "claude-code", ...).
        secrets: `isorun.Secret`s every sandbox gets (injected by the host, never readable in
            the guest).
        api_key: API key; `ISORUN_API_KEY` when None.
        api_url: API URL; `ISORUN_API_URL` when None.
        client: A `Client` to use instead of one of its own (then pass no connection options);
            it stays open after `close()`.
        transport: An httpx transport for a client of its own (`isorun.testing.FakeBackend`).

    Raises:
        UsageError: No API key, or connection options beside `client=`.

    Example:
        >>> with ThreadSandboxes("python") as sandboxes:  # doctest: +SKIP
        ...     graph = build_graph(sandboxes.tools())
        ...     graph.invoke(inputs, {"configurable": {"thread_id": "t1"}})
    """

    def __init__(
        self,
        image: str = "python",
        *,
        vcpus: int = 1,
        memory_mib: int = 1024,
        timeout_s: int = 1800,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] | None = None,
        profile: str | None = None,
        secrets: Sequence[Secret] | None = None,
        api_key: str | None = None,
        api_url: str | None = None,
        client: Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if client is not None and (api_key or api_url or transport):
            raise UsageError("pass either client= or connection options, not both")
        self._owns_client = client is None
        self._client = client or Client(api_key=api_key, api_url=api_url, transport=transport)
        self._image = image
        self._vcpus = vcpus
        self._memory_mib = memory_mib
        self._timeout_s = timeout_s
        self._env = env
        self._labels = labels
        self._allow = allow
        self._deny = deny
        self._profile = profile
        self._secrets = secrets
        # _lock guards the two dicts and _closed; a per-thread lock is held while that thread's
        # VM boots, so one conversation boots one VM without making the others wait.
        self._lock = threading.Lock()
        self._booting: dict[str, threading.Lock] = {}
        self._sandboxes: dict[str, Sandbox] = {}
        self._closed = False

    def get(self, config: RunnableConfig | None = None) -> Sandbox:
        """Return the sandbox of the config's thread, creating it on first use.

        Args:
            config: The graph config (a node's or tool's `config` parameter); None reads the
                running graph's config with `langgraph.config.get_config()`.

        Returns:
            The thread's live sandbox; do not destroy it yourself (use `release`).

        Raises:
            UsageError: No `thread_id` in the config, or `close()` was called.
            RuntimeError: `config` is None outside a running graph.
            isorun.IsorunError: The sandbox could not be created (see `isorun.Sandbox`).
        """
        thread_id = thread_id_of(config)
        with self._lock:
            self._check_open()
            booting = self._booting.setdefault(thread_id, threading.Lock())
        with booting:
            with self._lock:
                sandbox = self._sandboxes.get(thread_id)
            if sandbox is None:
                sandbox = self._boot(thread_id)
                with self._lock:
                    self._sandboxes[thread_id] = sandbox
        return sandbox

    def _boot(self, thread_id: str, snapshot: str | None = None) -> Sandbox:
        """A new VM for the thread: from the image, or continuing from `snapshot`."""
        return Sandbox(
            self._image,
            vcpus=self._vcpus,
            memory_mib=self._memory_mib,
            timeout_s=self._timeout_s,
            env=self._env,
            labels=self._labels,
            metadata={THREAD_METADATA_KEY: thread_id},
            snapshot=snapshot,
            allow=self._allow,
            deny=self._deny,
            profile=self._profile,
            secrets=self._secrets,
            client=self._client,
        )

    def release(self, thread_id: str) -> None:
        """Destroy the sandbox of `thread_id`, if it has one; its next `get` boots a new one.

        Raises:
            isorun.IsorunError: The delete failed (the handle is forgotten all the same).
        """
        with self._lock:
            sandbox = self._sandboxes.pop(thread_id, None)
        if sandbox is not None:
            sandbox.destroy()

    def tools(self) -> list[BaseTool]:
        """Return the sandbox tools (exec, read file, write file) for `ToolNode` / `create_agent`.

        Each call resolves the sandbox from the tool call's config, so one tool list serves
        every thread. Guest failures come back as error `ToolMessage`s (see `_tools`).
        """
        return _tools.sandbox_tools(lambda config, _state: self.get(config))

    def close(self) -> None:
        """Destroy every sandbox, then close the client if this object made it.

        Call it once the graphs using it have stopped. A second call does nothing.

        Raises:
            isorun.IsorunError: A delete failed; the others were still attempted.
        """
        with self._lock:
            self._closed = True
            sandboxes = list(self._sandboxes.values())
            self._sandboxes.clear()
        errors: list[Exception] = []
        for sandbox in sandboxes:
            try:
                sandbox.destroy()
            except Exception as error:  # every VM still gets its delete
                errors.append(error)
        if self._owns_client:
            self._client.close()
        if errors:
            raise errors[0]

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("ThreadSandboxes is closed")

    def __enter__(self) -> ThreadSandboxes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ThreadSandboxes({self._image!r}, threads={sorted(self._sandboxes)})"
