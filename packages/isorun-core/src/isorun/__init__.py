"""isorun: sandboxes for AI agents, real microVMs from any OCI image.

```python
from isorun import Sandbox

with Sandbox("python") as sb:
    print(sb.exec("python -c 'print(2**32)'").stdout)
```

`Sandbox` is synchronous, `AsyncSandbox` its asyncio twin; both can share a `Client` /
`AsyncClient`. Errors are in the tree drawn in `isorun._errors`. `isorun.testing` has an
in-memory fake of the API for tests. The library logs under the `isorun` logger, which has only
a `NullHandler` until the application configures logging.
"""

import logging

from isorun._async_sandbox import AsyncSandbox, SandboxCreation
from isorun._audit import AsyncAudit, Audit
from isorun._base import USE_CLIENT_DEFAULT, Secret
from isorun._client import AsyncClient, Client
from isorun._errors import (
    APIError,
    AuthenticationError,
    Conflict,
    ConnectError,
    ConnectTimeout,
    ExecFailed,
    ExecTimeout,
    FileError,
    Forbidden,
    ImageRejected,
    ImageUnavailable,
    InvalidRequest,
    IsorunError,
    NetworkError,
    NotFound,
    OutcomeUnknown,
    PoolTimeout,
    ProtocolError,
    QuotaExceeded,
    ReadError,
    ReadTimeout,
    SandboxError,
    SandboxNotFound,
    SandboxStateError,
    ServerError,
    ServiceUnavailable,
    SnapshotFailed,
    SnapshotNotFound,
    TerminalClosed,
    TerminalError,
    TerminalTimeout,
    TransportError,
    TransportTimeout,
    UsageError,
    WriteError,
    WriteTimeout,
)
from isorun._files import AsyncFiles, Files
from isorun._models import (
    AuditEntry,
    AuditFinding,
    AuditNodeReport,
    AuditReport,
    ExecEvent,
    ExecResult,
    ExitEvent,
    FileStat,
    Health,
    NetworkInfo,
    OutputEvent,
    ProcessInfo,
    SandboxInfo,
    SandboxUrl,
    SecretInfo,
    Shell,
    ShellEvent,
    ShellExit,
    ShellResized,
    ShellSkipped,
    ShellWriter,
    Snapshot,
    StartEvent,
    WriteResult,
)
from isorun._network import AsyncNetwork, Network
from isorun._sandbox import Sandbox
from isorun._shells import AsyncShells, Shells
from isorun._snapshots import AsyncSnapshots, Snapshots
from isorun._terminal import AsyncTerminal, Terminal, TerminalOpening

__all__ = [
    "USE_CLIENT_DEFAULT",
    "APIError",
    "AsyncAudit",
    "AsyncClient",
    "AsyncFiles",
    "AsyncNetwork",
    "AsyncSandbox",
    "AsyncShells",
    "AsyncSnapshots",
    "AsyncTerminal",
    "Audit",
    "AuditEntry",
    "AuditFinding",
    "AuditNodeReport",
    "AuditReport",
    "AuthenticationError",
    "Client",
    "Conflict",
    "ConnectError",
    "ConnectTimeout",
    "ExecEvent",
    "ExecFailed",
    "ExecResult",
    "ExecTimeout",
    "ExitEvent",
    "FileError",
    "FileStat",
    "Files",
    "Forbidden",
    "Health",
    "ImageRejected",
    "ImageUnavailable",
    "InvalidRequest",
    "IsorunError",
    "Network",
    "NetworkError",
    "NetworkInfo",
    "NotFound",
    "OutcomeUnknown",
    "OutputEvent",
    "PoolTimeout",
    "ProcessInfo",
    "ProtocolError",
    "QuotaExceeded",
    "ReadError",
    "ReadTimeout",
    "Sandbox",
    "SandboxCreation",
    "SandboxError",
    "SandboxInfo",
    "SandboxNotFound",
    "SandboxStateError",
    "SandboxUrl",
    "Secret",
    "SecretInfo",
    "ServerError",
    "ServiceUnavailable",
    "Shell",
    "ShellEvent",
    "ShellExit",
    "ShellResized",
    "ShellSkipped",
    "ShellWriter",
    "Shells",
    "Snapshot",
    "SnapshotFailed",
    "SnapshotNotFound",
    "Snapshots",
    "StartEvent",
    "Terminal",
    "TerminalClosed",
    "TerminalError",
    "TerminalOpening",
    "TerminalTimeout",
    "TransportError",
    "TransportTimeout",
    "UsageError",
    "WriteError",
    "WriteResult",
    "WriteTimeout",
]

logging.getLogger("isorun").addHandler(logging.NullHandler())
