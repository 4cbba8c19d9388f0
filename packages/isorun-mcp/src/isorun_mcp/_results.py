"""The tools' results: pydantic models, so that MCP clients get `structuredContent`.

FastMCP turns a returned model into an `outputSchema` on the tool and a JSON `structuredContent`
(plus the same JSON as text, for hosts that read only text). The fields mirror the SDK's models
(`isorun.SandboxInfo`, `ExecResult`, `FileStat`) under the names the tools take as arguments.
"""

from __future__ import annotations

from datetime import datetime

from isorun import ExecResult, FileStat, NetworkInfo, ProcessInfo, SandboxInfo, SandboxUrl
from isorun import Shell as ShellInfo
from isorun import Snapshot as SnapshotInfo
from pydantic import BaseModel


class Sandbox(BaseModel):
    """A sandbox: `sandbox_id` is what every other tool takes."""

    sandbox_id: str
    image: str
    image_ref: str
    state: str
    vcpus: int
    memory_mib: int
    expires_at: datetime
    forked_from: str | None = None
    from_snapshot: str | None = None

    @classmethod
    def of(cls, info: SandboxInfo) -> Sandbox:
        return cls(
            sandbox_id=info.id,
            image=info.image,
            image_ref=info.image_ref,
            state=info.state,
            vcpus=info.vcpus,
            memory_mib=info.memory_mib,
            expires_at=info.expires_at,
            forked_from=info.forked_from,
            from_snapshot=info.from_snapshot,
        )


class Exec(BaseModel):
    """A command's outcome. A non-zero `exit_code` or `timed_out` is a result, not an error."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    signal: int | None
    duration_ms: int
    truncated: bool

    @classmethod
    def of(cls, result: ExecResult) -> Exec:
        return cls(
            exit_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
            timed_out=result.timed_out,
            signal=result.signal,
            duration_ms=result.duration_ms,
            truncated=result.truncated,
        )


class FileContent(BaseModel):
    """A text file's content."""

    path: str
    content: str
    size_bytes: int


class FileWritten(BaseModel):
    """Where a write went and how many bytes the guest wrote."""

    path: str
    size_bytes: int


class FileEntry(BaseModel):
    """A file's metadata; `type` is "file", "dir", "symlink" or another kind."""

    name: str
    path: str
    type: str
    size_bytes: int
    mode: int
    mtime_ms: int
    link_target: str | None

    @classmethod
    def of(cls, stat: FileStat) -> FileEntry:
        return cls(
            name=stat.name,
            path=stat.path,
            type=stat.type,
            size_bytes=stat.size,
            mode=stat.mode,
            mtime_ms=stat.mtime_ms,
            link_target=stat.link_target,
        )


class DirListing(BaseModel):
    """The entries of one directory."""

    path: str
    entries: list[FileEntry]


class Deleted(BaseModel):
    """The sandbox is gone, and its id no longer works."""

    sandbox_id: str
    deleted: bool


class SandboxList(BaseModel):
    """The sandboxes the API key's tenant has."""

    sandboxes: list[Sandbox]


class Process(BaseModel):
    """A process started through the API, running or finished."""

    pid: int
    argv: list[str]
    running: bool
    exit_code: int | None
    signal: int | None

    @classmethod
    def of(cls, info: ProcessInfo) -> Process:
        return cls(
            pid=info.pid,
            argv=info.argv,
            running=info.running,
            exit_code=info.exit_code,
            signal=info.signal,
        )


class ProcessList(BaseModel):
    """The processes of one sandbox."""

    processes: list[Process]


class PathDone(BaseModel):
    """A filesystem change that has no other answer (mkdir, remove, rename): the path it left."""

    path: str


class Forked(BaseModel):
    """The clones a fork made: each a sandbox of its own, as the source was at the fork."""

    source_sandbox_id: str
    sandboxes: list[Sandbox]


class Snapshot(BaseModel):
    """A saved sandbox: `snapshot_id` is what `sandbox_create(snapshot=...)` takes."""

    snapshot_id: str
    sandbox_id: str
    name: str | None
    keep: bool
    image: str
    size_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, info: SnapshotInfo) -> Snapshot:
        return cls(
            snapshot_id=info.id,
            sandbox_id=info.sandbox_id,
            name=info.name,
            keep=info.keep,
            image=info.image,
            size_bytes=info.size_bytes,
            created_at=info.created_at,
        )


class SnapshotList(BaseModel):
    """The snapshots the API key's tenant has, newest first."""

    snapshots: list[Snapshot]


class SnapshotDeleted(BaseModel):
    """The snapshot is gone; sandboxes started from it are not affected."""

    snapshot_id: str
    deleted: bool


class Network(BaseModel):
    """A sandbox's egress policy, the secrets its host injects (names only) and the packets
    refused so far (null unless it runs)."""

    sandbox_id: str
    profile: str
    allow: list[str]
    deny: list[str]
    secrets: list[str]
    dropped_packets: int | None

    @classmethod
    def of(cls, sandbox_id: str, info: NetworkInfo) -> Network:
        return cls(
            sandbox_id=sandbox_id,
            profile=info.profile,
            allow=info.allow,
            deny=info.deny,
            secrets=[f"{secret.name} -> {secret.upstream}" for secret in info.secrets],
            dropped_packets=None if info.drops is None else sum(info.drops.values()),
        )


class Url(BaseModel):
    """A signed https URL to a port of a sandbox: `url` opens as it is (a browser, curl, a
    fetch); `origin` plus the `X-Isorun-Token: token` header works where the query cannot carry
    the token. A private URL's requests also need `X-Isorun-Key` (an API key)."""

    sandbox_id: str
    url: str
    origin: str
    token: str
    port: int
    public: bool
    expires_at: datetime

    @classmethod
    def of(cls, sandbox_id: str, url: SandboxUrl) -> Url:
        return cls(
            sandbox_id=sandbox_id,
            url=url.url,
            origin=url.origin,
            token=url.token,
            port=url.port,
            public=url.public,
            expires_at=url.expires_at,
        )


class Shell(BaseModel):
    """A persistent shell: `shell_id` is what the other shell tools take."""

    shell_id: str
    pid: int
    command: list[str]
    cols: int
    rows: int
    running: bool
    exit_code: int | None
    signal: int | None
    attached: int
    started_at: datetime

    @classmethod
    def of(cls, info: ShellInfo) -> Shell:
        return cls(
            shell_id=info.id,
            pid=info.pid,
            command=info.command,
            cols=info.cols,
            rows=info.rows,
            running=info.running,
            exit_code=info.exit_code,
            signal=info.signal,
            attached=info.attached,
            started_at=info.started_at,
        )


class ShellList(BaseModel):
    """The shells of one sandbox."""

    shells: list[Shell]


class ShellOutput(BaseModel):
    """What a shell's terminal printed since this server last read it, escape sequences and
    all. `truncated`: a note in `output` says what was left out. Once `exited`, `exit_code` (or
    `signal`, the one that killed it) says how the shell ended."""

    shell_id: str
    output: str
    truncated: bool
    exited: bool
    exit_code: int | None
    signal: int | None


class ShellSignalled(BaseModel):
    """The signal number sent, and to what: the job in front, or the shell's process group."""

    shell_id: str
    signal: int
    target: str


class ShellClosed(BaseModel):
    """The shell was hung up; `exit_code`/`signal` once its end was seen (null otherwise)."""

    shell_id: str
    closed: bool
    exit_code: int | None
    signal: int | None
