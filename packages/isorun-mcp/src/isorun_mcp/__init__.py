"""isorun sandboxes for the Model Context Protocol: an MCP server, stdio or streamable HTTP.

```python
from isorun_mcp import build_server

build_server("core").run()          # what the `isorun-mcp` command does
```
Tool profiles and the session model are in `isorun_mcp._server`; the error convention (guest
failures are results, a missing sandbox or file is a tool error) in `isorun_mcp._sandboxes`;
the structured results in `isorun_mcp._results`.
"""

from isorun_mcp._results import (
    Deleted,
    DirListing,
    Exec,
    FileContent,
    FileEntry,
    FileWritten,
    PathDone,
    Process,
    ProcessList,
    Sandbox,
    SandboxList,
    Shell,
    ShellClosed,
    ShellList,
    ShellOutput,
    ShellSignalled,
)
from isorun_mcp._server import Profile, build_server

__all__ = [
    "Deleted",
    "DirListing",
    "Exec",
    "FileContent",
    "FileEntry",
    "FileWritten",
    "PathDone",
    "Process",
    "ProcessList",
    "Profile",
    "Sandbox",
    "SandboxList",
    "Shell",
    "ShellClosed",
    "ShellList",
    "ShellOutput",
    "ShellSignalled",
    "build_server",
]
