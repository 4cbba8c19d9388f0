"""`build_server`: the isorun MCP server, a FastMCP (mcp 1.x) instance with one tool profile.

```
profile "core"   sandbox_create · sandbox_exec · sandbox_read_file · sandbox_write_file
                 sandbox_list_dir · sandbox_delete
profile "full"   core + sandbox_list · sandbox_keep_alive · sandbox_processes · sandbox_stat
                 sandbox_mkdir · sandbox_remove · sandbox_rename · fork, snapshots, hibernate ·
                 sandbox_network · sandbox_url · shell_open · shell_write · shell_read
                 shell_signal · shell_close · shell_list
```
`sandbox_create` takes the egress policy (`profile`, `allow`, `deny`) from the model; secrets
come only from the server's configuration (`secrets=`, `isorun-mcp --secret`) and go to every
sandbox it creates, so no value passes through the model.
The server's lifespan runs once per MCP session: it opens the session's `isorun.AsyncClient`
(from `client_factory`, by default configured from ISORUN_API_URL / ISORUN_API_KEY) and closes
it when the session ends. Sandboxes are not destroyed then: they expire on their `timeout_s`;
nor are shells (`isorun_mcp._shells`): the session only detaches from them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Literal

from isorun import AsyncClient, Secret
from mcp.server.fastmcp import FastMCP

from isorun_mcp import _core, _full, _shells
from isorun_mcp._sandboxes import Sandboxes

Profile = Literal["core", "full"]

INSTRUCTIONS = (
    "isorun sandboxes are microVMs booted from OCI images. Call sandbox_create first and pass "
    "its sandbox_id to the other tools; call sandbox_delete when done. A command's non-zero "
    "exit code is a normal result of sandbox_exec, not an error."
)


def build_server(
    profile: Profile = "core",
    *,
    client_factory: Callable[[], AsyncClient] = AsyncClient,
    secrets: Sequence[Secret] = (),
    host: str = "127.0.0.1",
    port: int = 8000,
) -> FastMCP[Sandboxes]:
    """Build the isorun MCP server; run it with `.run()` (stdio) or `.run("streamable-http")`.

    Args:
        profile: "core" for the six basic tools, "full" for every tool the API supports.
        client_factory: Makes each session's client; the default reads ISORUN_API_URL and
            ISORUN_API_KEY from the environment.
        secrets: Given to every sandbox `sandbox_create` makes (the host's proxy injects each
            into requests to its upstream; the guest sees a placeholder).
        host: Where the streamable-HTTP transport listens.
        port: Its port; the endpoint is `/mcp`.

    Returns:
        The FastMCP server.

    Example:
        ```python
        from isorun_mcp import build_server

        build_server("full").run("streamable-http")
        ```
    """

    @asynccontextmanager
    async def lifespan(_: FastMCP[Sandboxes]) -> AsyncIterator[Sandboxes]:
        session = Sandboxes(client_factory(), secrets)
        try:
            yield session
        finally:
            await session.aclose()

    server = FastMCP("isorun", instructions=INSTRUCTIONS, lifespan=lifespan, host=host, port=port)
    _core.register(server)
    if profile == "full":
        _full.register(server)
        _shells.register(server)
    return server
