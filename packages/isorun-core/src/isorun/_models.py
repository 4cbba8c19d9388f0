"""Wire models of the isorun API (spec/api.md), as the SDK returns them.

Models ignore members they do not know, so a newer server does not break an older SDK. Free-form
enumerations (`SandboxInfo.state`, `FileStat.type`) are plain strings for the same reason; their
current values are listed on each field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from isorun._errors import ExecFailed, ExecTimeout


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class SandboxInfo(_Wire):
    """A sandbox as the API describes it (spec/api.md "Sandboxes").

    Attributes:
        id: `sb-...`.
        image: The image as asked (a short name such as "python", or a reference).
        image_ref: The pinned reference it resolved to (`registry/repo@sha256:...`).
        state: "running", "hibernated", "stopped" or "failed".
        expires_at: When the sandbox is destroyed unless kept alive (paused while hibernated).
        forked_from: The sandbox this one is a clone of (`fork`).
        from_snapshot: The snapshot this one started from.
        hibernated_at: When it was hibernated, while it is.
        auto_hibernate_s: Idle seconds after which the backend hibernates it, if set.
    """

    id: str
    image: str
    image_ref: str
    state: str
    vcpus: int
    memory_mib: int
    created_at: datetime
    expires_at: datetime
    env: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    forked_from: str | None = None
    from_snapshot: str | None = None
    hibernated_at: datetime | None = None
    auto_hibernate_s: int | None = None


class Snapshot(_Wire):
    """A sandbox's saved state (spec/api.md "Snapshots"), to start new sandboxes from.

    Attributes:
        id: `snap-...`; pass it as `snapshot=` to create a sandbox from it.
        sandbox_id: The sandbox it was saved from.
        name: The name given at save, if any.
        keep: Kept when its sandbox is deleted (otherwise deleted with it).
        size_bytes: Size of the saved state on its node.
    """

    id: str
    sandbox_id: str
    name: str | None = None
    keep: bool = False
    image: str
    image_ref: str
    vcpus: int
    memory_mib: int
    size_bytes: int = 0
    created_at: datetime


class SecretInfo(_Wire):
    """A sandbox's secret as the API shows it: never its value (spec/api.md "Network").

    Attributes:
        name: The guest's environment variable holding a placeholder.
        upstream: The https base URL the value goes to.
        header_name: The header the proxy fills with it.
        base_url_env: The variable set to the proxy's route for `upstream`, if any.
    """

    name: str
    upstream: str
    header_name: str
    base_url_env: str | None = None


class NetworkInfo(_Wire):
    """A sandbox's network (spec/api.md "Network").

    Attributes:
        profile: The base rules ("locked-down", "unrestricted", "openai", ...).
        allow: Names, wildcards and CIDRs opened on top of the profile (allow wins over deny).
        deny: Names, wildcards and CIDRs closed.
        secrets: The secrets the host's proxy injects, without their values.
        drops: Packets refused so far (`dropped`, `spoofed`); None unless the sandbox runs.
    """

    profile: str = "locked-down"
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    secrets: list[SecretInfo] = Field(default_factory=list)
    drops: dict[str, int] | None = None


class SandboxUrl(_Wire):
    """A signed URL to a port of a sandbox, served by the API's edge (spec/api.md "URLs").

    The server in the sandbox listens on that port (on its loopback is enough); requests to
    the URL reach it over TLS, and a hibernated sandbox is resumed by the first of them.
    `str(url)` is `url`.

    Attributes:
        url: `origin` with the token in its query (`?isorun_token=...`): open it as it is;
            the edge turns the token into a cookie, so links within the site keep working.
        origin: `https://{port}-{sandbox_id}.{domain}[:port]`, without the token.
        token: The token alone, for clients that send it as the `X-Isorun-Token` header.
        port: The port in the sandbox.
        public: True: the URL alone lets a request in. False: each request also needs an API
            key of the tenant in `X-Isorun-Key`.
        expires_at: When the token stops working.
    """

    url: str
    origin: str
    token: str
    port: int
    public: bool
    expires_at: datetime

    def __str__(self) -> str:
        return self.url


class ExecResult(_Wire):
    """The outcome of one command (spec/api.md "Exec", buffered answer).

    A command that ran is a result, whatever its exit code: `exec` raises only when the call
    itself fails. Use `check()` (or `exec(..., check=True)`) to turn a non-zero exit or a
    timeout into an exception.

    Attributes:
        exit_code: The exit status, or None when the process was killed by a signal or timed
            out.
        signal: The signal that killed it, if one did.
        timed_out: True when the exec's `timeout_s` ran out and the process was killed.
        duration_ms: Wall time of the process.
        stdout: Standard output, decoded as UTF-8 with replacement.
        stderr: Standard error, decoded the same way.
        truncated: True when the server kept only the first 16 MiB of a stream.
    """

    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    duration_ms: int = 0
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    # Not on the wire: set by the sandbox that ran the command, for check()'s error.
    _sandbox_id: str | None = PrivateAttr(default=None)

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0 before any timeout."""
        return self.exit_code == 0 and not self.timed_out

    def check(self) -> ExecResult:
        """Return this result if the command succeeded, else raise.

        Returns:
            This result, so that `sb.exec(cmd).check().stdout` reads naturally.

        Raises:
            ExecTimeout: The command ran past its `timeout_s`.
            ExecFailed: The command exited non-zero or was killed by a signal.
        """
        if self.timed_out:
            raise ExecTimeout(
                f"command timed out after {self.duration_ms} ms",
                result=self,
                sandbox_id=self._sandbox_id,
            )
        if self.exit_code != 0:
            how = (
                f"exited with {self.exit_code}"
                if self.signal is None
                else f"was killed by signal {self.signal}"
            )
            tail = self.stderr.strip()[-500:]
            raise ExecFailed(
                f"command {how}" + (f": {tail}" if tail else ""),
                result=self,
                sandbox_id=self._sandbox_id,
            )
        return self


class StartEvent(_Wire):
    """The process started (first line of a streamed exec)."""

    type: Literal["start"] = "start"
    pid: int


class OutputEvent(_Wire):
    """A chunk of output, raw bytes as the process wrote them.

    Attributes:
        stream: "stdout" or "stderr".
        data: The bytes (base64 on the wire). A chunk may end inside a UTF-8 sequence.
    """

    type: Literal["output"] = "output"
    stream: Literal["stdout", "stderr"]
    data: bytes


class ExitEvent(_Wire):
    """The process ended (last line of a streamed exec); fields as in `ExecResult`."""

    type: Literal["exit"] = "exit"
    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    duration_ms: int = 0


ExecEvent = StartEvent | OutputEvent | ExitEvent
"""One event of a streamed exec: a start, output chunks, then an exit."""


class ProcessInfo(_Wire):
    """A process the sandbox's agent knows (spec/api.md `GET .../processes`)."""

    pid: int
    tag: str | None = None
    argv: list[str] = Field(default_factory=list)
    running: bool
    exit_code: int | None = None
    signal: int | None = None


class FileStat(_Wire):
    """A file's metadata (spec/api.md "Files", FileStat).

    Attributes:
        type: "file", "dir", "symlink" or another kind the guest reports.
        size: Size in bytes.
        mode: Permission bits (e.g. 0o644).
        mtime_ms: Modification time, milliseconds since the epoch.
        link_target: The target of a symlink, else None.
    """

    name: str
    path: str
    type: str
    size: int
    mode: int
    uid: int = 0
    gid: int = 0
    mtime_ms: int = 0
    link_target: str | None = None

    @property
    def is_dir(self) -> bool:
        """True for a directory."""
        return self.type == "dir"


class WriteResult(_Wire):
    """The answer to a file upload: where it went and how many bytes the guest wrote."""

    path: str
    size_bytes: int = Field(alias="bytes")


class Health(_Wire):
    """`GET /v1/health`."""

    status: str
    version: str
    accelerator: str


class AuditEntry(_Wire):
    """One entry of a node's tamper-evident audit log (spec/api.md "Audit").

    Attributes:
        seq: Its place in the node's chain (a sandbox's entries have gaps: other sandboxes').
        time: When it was written, RFC 3339 UTC.
        kind: "sandbox.create", "exec.start", "exec.end", "egress.dns", ...
        fields: What happened: the command, the exit code and `duration_ms`, the host, ...
        prev_mac: The MAC of the node's entry before this one.
        mac: HMAC-SHA256 over this entry, `prev_mac` included, under the node's key.
    """

    seq: int
    time: str
    sandbox_id: str | None
    kind: str
    fields: dict[str, Any] = Field(default_factory=dict)
    prev_mac: str
    mac: str


class AuditFinding(_Wire):
    """The first entry of a node's chain that is not as written.

    Attributes:
        reason: "altered", "removed", "reordered", "truncated", "unreadable", "header" or
            "head".
    """

    seq: int
    reason: str


class AuditNodeReport(_Wire):
    """One node's chain, verified: `checked` entries chain correctly before `first_bad`."""

    node: str
    ok: bool
    checked: int
    first_bad: AuditFinding | None = None


class AuditReport(_Wire):
    """`GET /v1/audit/verify`: every node's chain; `ok` when all are intact."""

    ok: bool
    nodes: list[AuditNodeReport]

    @property
    def first_bad(self) -> tuple[str, AuditFinding] | None:
        """The first node whose chain is not intact, and its first bad entry."""
        return next(((n.node, n.first_bad) for n in self.nodes if n.first_bad is not None), None)


class Shell(_Wire):
    """A persistent shell: a process on a terminal in the guest that outlives its clients
    (spec/api.md "Shells").

    Attributes:
        id: `sh-` and 12 hex digits.
        pid: The shell process's pid in the guest.
        command: Its argv (cut as in `ps`).
        cols: The terminal's width.
        rows: The terminal's height.
        running: False once it has ended (listed for 5 minutes after).
        exit_code: Its exit status once it has exited.
        signal: The signal that killed it, if one did.
        attached: Clients attached now.
        writer: Whether one of them is the writer (its input reaches the terminal).
        started_at: When it started.
    """

    id: str
    pid: int
    command: list[str] = Field(default_factory=list)
    cols: int
    rows: int
    running: bool
    exit_code: int | None = None
    signal: int | None = None
    attached: int = 0
    writer: bool = False
    started_at: datetime


class ShellSkipped(_Wire):
    """This client fell behind by more than the scrollback: `bytes` of output were lost to it."""

    type: Literal["skipped"] = "skipped"
    skipped_bytes: int = Field(alias="bytes")


class ShellWriter(_Wire):
    """Another client became the writer: this one's input is dropped from now on."""

    type: Literal["writer"] = "writer"
    writer: bool


class ShellResized(_Wire):
    """The terminal was resized (by any client)."""

    type: Literal["resize"] = "resize"
    cols: int
    rows: int


class ShellExit(_Wire):
    """The shell ended; the server closes the connection after this.

    Attributes:
        exit_code: Its exit status, or None when a signal killed it.
        signal: The signal that killed it, if one did.
        duration_ms: How long it ran.
    """

    type: Literal["exit"] = "exit"
    exit_code: int | None
    signal: int | None = None
    duration_ms: int = 0

    @property
    def status(self) -> int:
        """The status a shell would report: the exit code, or 128 + the killing signal."""
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_code if self.exit_code is not None else 128


ShellEvent = ShellSkipped | ShellWriter | ShellResized | ShellExit
"""A control event of an attached shell, between its output (`Terminal.recv`)."""
