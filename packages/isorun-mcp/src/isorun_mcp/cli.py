"""`isorun-mcp`: the isorun MCP server as a command, stdio by default.

```
isorun-mcp                                          stdio, core profile (for MCP host configs)
isorun-mcp --profile full --transport streamable-http --host 127.0.0.1 --port 8000
```
The API is found through ISORUN_API_URL and ISORUN_API_KEY, as for the `isorun` CLI.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import get_args

from isorun_mcp._server import Profile, build_server

TRANSPORTS = ("stdio", "streamable-http")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and serve until the transport closes."""
    parser = argparse.ArgumentParser(prog="isorun-mcp", description="The isorun MCP server.")
    parser.add_argument("--transport", choices=TRANSPORTS, default="stdio")
    parser.add_argument("--profile", choices=get_args(Profile), default="core")
    parser.add_argument("--host", default="127.0.0.1", help="streamable-http only")
    parser.add_argument("--port", type=int, default=8000, help="streamable-http only")
    args = parser.parse_args(argv)
    server = build_server(args.profile, host=args.host, port=args.port)
    server.run("stdio" if args.transport == "stdio" else "streamable-http")


if __name__ == "__main__":
    main()
