"""`isorun-mcp`: the isorun MCP server as a command, stdio by default.

```
isorun-mcp                                          stdio, core profile (for MCP host configs)
isorun-mcp --profile full --transport streamable-http --host 127.0.0.1 --port 8000
isorun-mcp --secret OPENAI_API_KEY@https://api.openai.com/v1,base_url_env=OPENAI_BASE_URL
```
The API is found through ISORUN_API_URL and ISORUN_API_KEY, as for the `isorun` CLI. Each
`--secret` (the `isorun` CLI's syntax; the value is read from `$NAME`) goes to every sandbox
the server creates.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import get_args

from isorun._cli_network import parse_secret

from isorun_mcp._server import Profile, build_server

TRANSPORTS = ("stdio", "streamable-http")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and serve until the transport closes."""
    parser = argparse.ArgumentParser(prog="isorun-mcp", description="The isorun MCP server.")
    parser.add_argument("--transport", choices=TRANSPORTS, default="stdio")
    parser.add_argument("--profile", choices=get_args(Profile), default="core")
    parser.add_argument("--host", default="127.0.0.1", help="streamable-http only")
    parser.add_argument("--port", type=int, default=8000, help="streamable-http only")
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        type=parse_secret,
        metavar="NAME@UPSTREAM",
        help="give every sandbox $NAME's value for the https UPSTREAM (repeatable; add "
        ",base_url_env=VAR or ,header=TEMPLATE)",
    )
    args = parser.parse_args(argv)
    server = build_server(args.profile, secrets=args.secret, host=args.host, port=args.port)
    server.run("stdio" if args.transport == "stdio" else "streamable-http")


if __name__ == "__main__":
    main()
