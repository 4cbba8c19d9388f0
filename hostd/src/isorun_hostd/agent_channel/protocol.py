"""The agent protocol's constants and message models (spec/agent/protocol.md, version 1).

Every value here is also in ``spec/agent/wire.json``; a test holds the two (and the Go agent's
copy) together. Replies from the guest are parsed into these models, which is where hostile or
broken guest input is rejected.
"""

from __future__ import annotations

import base64
from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PROTOCOL_VERSION = 1
MAGIC = b"ISRN"
HEADER_BYTES = 20
MAX_PAYLOAD_BYTES = 1 << 20
DATA_CHUNK_BYTES = 64 << 10
INITIAL_WINDOW_BYTES = 256 << 10
MAX_STREAMS = 1024
EXIT_TTL_MS = 300_000
DETACHED_BUFFER_BYTES = 64 << 10
SHELL_SCROLLBACK_BYTES = 256 << 10
MAX_SHELL_SCROLLBACK_BYTES = 4 << 20
MAX_SHELLS = 64
PORT_NAME = "org.isorun.agent.0"

ERROR_CODES = (
    "bad_request",
    "not_found",
    "permission_denied",
    "exists",
    "not_a_directory",
    "is_a_directory",
    "not_empty",
    "spawn_failed",
    "io_error",
    "flow_control",
    "busy",
    "detached",
    "internal",
    "refused",
)


class FrameType(IntEnum):
    """Frame type codes (protocol.md section 2)."""

    HELLO = 1
    REQUEST = 2
    REPLY = 3
    EVENT = 4
    DATA = 5
    EOF = 6
    CREDIT = 7
    ERROR = 8
    CANCEL = 9


class Channel(IntEnum):
    """The ``flags`` of DATA and EOF frames."""

    INPUT = 0
    STDOUT = 1
    STDERR = 2


class _Guest(BaseModel):
    """A message from the guest: unknown fields are ignored, wrong types rejected."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class Empty(_Guest):
    """A reply that carries nothing (``{}``)."""


class HelloReply(_Guest):
    session: str
    protocol: int
    agent_version: str = Field(max_length=64)


class ErrorReply(_Guest):
    code: str = Field(max_length=64)
    message: str = Field(max_length=4096)


class StartEvent(_Guest):
    """protocol.md 5.2: the process has started."""

    event: Literal["start"]
    pid: int = Field(gt=0)


class ExecEnd(_Guest):
    """protocol.md 5.2: how a process ended."""

    exit_code: int | None = Field(default=None, ge=0, le=255)
    signal: int | None = Field(default=None, gt=0, lt=128)
    timed_out: bool = False
    duration_ms: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_outcome(self) -> ExecEnd:
        if (self.exit_code is None) == (self.signal is None):
            raise ValueError("exactly one of exit_code and signal must be set")
        return self


class FileStat(_Guest):
    """protocol.md 5.5: a stat object."""

    name: str = Field(max_length=4096)
    path: str = Field(max_length=4096)
    type: Literal["file", "dir", "symlink", "other"]
    size: int = Field(ge=0)
    mode: int = Field(ge=0, le=0o7777)
    uid: int = Field(ge=0)
    gid: int = Field(ge=0)
    mtime_ms: int
    link_target: str | None = Field(default=None, max_length=4096)


class StatEvent(FileStat):
    event: Literal["stat"]


class Listing(_Guest):
    entries: list[FileStat]


class EntriesEvent(_Guest):
    """protocol.md 5.5: the leading entries of a listing too large for one frame."""

    event: Literal["entries"]
    entries: list[FileStat]


class ByteCount(_Guest):
    bytes: int = Field(ge=0)


class ProcessInfo(_Guest):
    pid: int = Field(gt=0)
    tag: str | None = Field(default=None, max_length=256)
    argv: list[str] = Field(max_length=4096)
    running: bool
    exit_code: int | None = None
    signal: int | None = None
    argv_truncated: bool = False


class ProcessList(_Guest):
    """protocol.md 5.4; ``truncated`` when entries were left out to fit one frame."""

    processes: list[ProcessInfo]
    truncated: bool = False


class Health(_Guest):
    ok: bool
    uptime_ms: int = Field(ge=0)
    processes: int = Field(ge=0)


class VersionReply(_Guest):
    agent_version: str = Field(max_length=64)
    protocol: int


class IdentityReply(_Guest):
    """protocol.md 5.1.1: the identity was applied; ``clock_step_ms`` is new minus old."""

    ok: bool
    entropy_bytes: int = Field(ge=0)
    clock_step_ms: int
    machine_id_written: bool


# protocol.md 5.1.1: the bounds the agent enforces, checked here too so that a host bug fails
# before anything is sent.
MIN_ENTROPY_BYTES = 32
MAX_ENTROPY_BYTES = 512
MIN_TIME_UNIX_NS = 946_684_800_000_000_000  # 2000-01-01T00:00:00Z
HOSTNAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
MACHINE_ID_PATTERN = r"^[0-9a-f]{32}$"


class IdentityRequest(BaseModel):
    """protocol.md 5.1.1: what makes a restored guest distinct from the snapshot's other copies."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    entropy: bytes = Field(min_length=MIN_ENTROPY_BYTES, max_length=MAX_ENTROPY_BYTES, repr=False)
    time_unix_ns: int = Field(ge=MIN_TIME_UNIX_NS, lt=1 << 63)
    hostname: str = Field(pattern=HOSTNAME_PATTERN)
    # None keeps the guest's own: one a previous identity op gave it.
    machine_id: str | None = Field(default=None, pattern=MACHINE_ID_PATTERN)

    @model_validator(mode="after")
    def _not_the_null_id(self) -> IdentityRequest:
        if self.machine_id is not None and not self.machine_id.strip("0"):
            raise ValueError("machine_id must not be all zero")
        return self

    def payload(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "op": "identity",
            "entropy": base64.b64encode(self.entropy).decode(),
            "time_unix_ns": self.time_unix_ns,
            "hostname": self.hostname,
        }
        if self.machine_id is not None:
            payload["machine_id"] = self.machine_id
        return payload


class ExecRequest(BaseModel):
    """protocol.md 5.2: what to run. Exactly one of ``argv`` and ``shell``."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] | None = None
    shell: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str = "/"
    user: str = "root"
    stdin: bool = False
    timeout_ms: int = Field(default=0, ge=0)
    tag: str | None = None

    @model_validator(mode="after")
    def _one_command(self) -> ExecRequest:
        if (self.argv is None) == (self.shell is None):
            raise ValueError("give exactly one of argv and shell")
        if self.argv is not None and not self.argv:
            raise ValueError("argv must not be empty")
        return self

    def payload(self) -> dict[str, object]:
        return {"op": "exec", **self.model_dump(exclude_none=True)}


# protocol.md 5.6: the bounds of a terminal's size, checked here too.
MAX_TERMINAL_SIDE = 1000
MIN_SHELL_SCROLLBACK_BYTES = 1024


class ShellRequest(BaseModel):
    """protocol.md 5.6: a shell to open on a pseudo-terminal."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str = "/"
    user: str = "root"
    cols: int = Field(default=80, ge=1, le=MAX_TERMINAL_SIDE)
    rows: int = Field(default=24, ge=1, le=MAX_TERMINAL_SIDE)
    scrollback_bytes: int = Field(
        default=SHELL_SCROLLBACK_BYTES,
        ge=MIN_SHELL_SCROLLBACK_BYTES,
        le=MAX_SHELL_SCROLLBACK_BYTES,
    )
    tag: str | None = None

    def payload(self) -> dict[str, object]:
        return {"op": "shell_open", **self.model_dump(exclude_none=True)}


SHELL_ID_PATTERN = r"^sh-[0-9a-f]{12}$"


class ShellOpened(_Guest):
    id: str = Field(pattern=SHELL_ID_PATTERN)
    pid: int = Field(gt=0)


class ShellStart(_Guest):
    """protocol.md 5.6: an attach's first event."""

    event: Literal["start"]
    pid: int = Field(gt=0)
    cols: int = Field(ge=1, le=MAX_TERMINAL_SIDE)
    rows: int = Field(ge=1, le=MAX_TERMINAL_SIDE)
    writer: bool


class ShellSkipped(_Guest):
    """The stream fell behind by more than the scrollback; ``bytes`` were never delivered."""

    event: Literal["skipped"]
    bytes: int = Field(gt=0)


class ShellWriter(_Guest):
    """Another stream became the writer; this one's input is dropped from now on."""

    event: Literal["writer"]
    writer: bool


class ShellResized(_Guest):
    event: Literal["resize"]
    cols: int = Field(ge=1, le=MAX_TERMINAL_SIDE)
    rows: int = Field(ge=1, le=MAX_TERMINAL_SIDE)


class ShellEnd(_Guest):
    """protocol.md 5.6: how a shell ended."""

    exit_code: int | None = Field(default=None, ge=0, le=255)
    signal: int | None = Field(default=None, gt=0, lt=128)
    duration_ms: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_outcome(self) -> ShellEnd:
        if (self.exit_code is None) == (self.signal is None):
            raise ValueError("exactly one of exit_code and signal must be set")
        return self


class ShellInfo(_Guest):
    id: str = Field(pattern=SHELL_ID_PATTERN)
    pid: int = Field(gt=0)
    tag: str | None = Field(default=None, max_length=256)
    argv: list[str] = Field(max_length=4096)
    cols: int = Field(ge=1, le=MAX_TERMINAL_SIDE)
    rows: int = Field(ge=1, le=MAX_TERMINAL_SIDE)
    running: bool
    exit_code: int | None = None
    signal: int | None = None
    attached: int = Field(ge=0)
    writer: bool
    started_unix_ms: int = Field(ge=0)


class ShellList(_Guest):
    shells: list[ShellInfo] = Field(max_length=MAX_SHELLS)


class Connected(_Guest):
    """protocol.md 5.7: the agent's dial to the guest port succeeded."""

    event: Literal["connected"]


class TunnelEnd(_Guest):
    """protocol.md 5.7: both directions of a tunnel are done."""

    bytes_in: int = Field(ge=0)
    bytes_out: int = Field(ge=0)
