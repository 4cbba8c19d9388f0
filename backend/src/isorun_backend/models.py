"""The backend's data: database tables (SQLAlchemy) and the public wire models (pydantic).

```
tenants 1─* api_keys          a key authenticates as its tenant; only its sha256 is stored
tenants 1─* sandboxes         every sandbox belongs to the tenant of the key that created it
tenants 1─* idempotency_keys  (tenant, key) -> the sandbox a POST /v1/sandboxes created
tenants 1─* quota_reservations  a create between its quota check and its sandbox row
tenants 1─* snapshots         a saved sandbox state, on the node that saved it
sandboxes 1─* hibernations    the spans a sandbox spent hibernated (not metered)
```

Sandbox states: ``running`` (a VM on its node) <-> ``hibernated`` (no VM; its state on its
node's disk) ; ``running`` or ``hibernated`` -> ``stopped`` (TTL, shutdown, restart, DELETE)
or ``failed``; a DELETE sets ``deleted_at`` and the row answers 404 from then on. Wire models follow
spec/api.md section by section; each resource has Create, Update and Public shapes.

Metering reads ``created_at`` .. ``stopped_at`` (set whenever a row stops), less the spans in
``hibernations`` (``hibernated_s`` sums the closed ones, ``hibernated_at`` starts the open one);
a running row is metered up to now (services.usage).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from isorun_hostd.agent_channel.protocol import (
    INITIAL_WINDOW_BYTES,
    MAX_SHELL_SCROLLBACK_BYTES,
    MAX_TERMINAL_SIDE,
    MIN_SHELL_SCROLLBACK_BYTES,
    SHELL_SCROLLBACK_BYTES,
)
from isorun_hostd.api.models import NodeAuditEntry, NodeSecret
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec, SecretSpec
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SandboxState = Literal["running", "hibernated", "stopped", "failed"]

MIN_VCPUS, MAX_VCPUS = 1, 16
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 128, 16384
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 1, 86400
MAX_STDIN_BYTES = INITIAL_WINDOW_BYTES
MAX_STDIN_CHARS = MAX_STDIN_BYTES  # a first, cheap bound; the UTF-8 size is checked after
MAX_OUTPUT_BYTES = 16 << 20  # per stream, buffered exec
MAX_FORKS = 16  # hostd's MAX_FORKS: clones per fork call
MAX_LIST_LIMIT = 200
DEFAULT_LIST_LIMIT = 50


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- tables ------------------------------------------------------------------------------------


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware UTC datetime on every database: SQLite keeps no zone, so it is stored naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: times are stored as aware UTC")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, str]: JSON}  # noqa: RUF012


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Quota overrides; null means the deployment's default (BackendSettings.quota_*).
    max_sandboxes: Mapped[int | None] = mapped_column(default=None)
    max_vcpus: Mapped[int | None] = mapped_column(default=None)
    max_memory_mib: Mapped[int | None] = mapped_column(default=None)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # "isr_" and the first characters of the key: enough to tell keys apart in a listing.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class SandboxRow(Base):
    __tablename__ = "sandboxes"
    # Lists are per tenant, newest first, paged by (created_at, id).
    __table_args__ = (Index("ix_sandboxes_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    image: Mapped[str] = mapped_column(String(512))
    image_ref: Mapped[str] = mapped_column(String(512))
    state: Mapped[str] = mapped_column(String(16), index=True)
    vcpus: Mapped[int]
    memory_mib: Mapped[int]
    env: Mapped[dict[str, str]]
    # `metadata` is taken by SQLAlchemy's declarative base; the column keeps the API's name.
    meta: Mapped[dict[str, str]] = mapped_column("metadata")
    labels: Mapped[dict[str, str]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    deleted_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # The hostd node that runs (or ran) the VM: a configured node's name, or "embedded".
    node: Mapped[str] = mapped_column(String(64), default="embedded")
    # When the VM went away (expiry, delete, shutdown, restart): the end of its metered time.
    stopped_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Where it came from: the sandbox it is a clone of, or the snapshot it was restored from.
    forked_from: Mapped[str | None] = mapped_column(String(32), default=None)
    from_snapshot: Mapped[str | None] = mapped_column(String(32), default=None)
    # Hibernation: the open span's start (state "hibernated"), and the closed spans' seconds.
    hibernated_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    hibernated_s: Mapped[float] = mapped_column(Float, default=0.0)
    # Hibernate after this many idle seconds (no exec, file or process call); null: never.
    auto_hibernate_s: Mapped[int | None] = mapped_column(default=None)
    # Its NetworkSpec as JSON, secret values in clear (services.network): what a resume, a fork
    # or a restore of its snapshots gives the node again. Null: no egress at all.
    network: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Requests its public URLs let in (edge.app), counted for the bill.
    url_requests: Mapped[int] = mapped_column(default=0, server_default="0")


class HibernationSpan(Base):
    """A span a sandbox spent hibernated; ``ended_at`` is null while it still is."""

    __tablename__ = "hibernations"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id"), index=True)
    started_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class SnapshotRow(Base):
    """A named snapshot: its state lives on ``node``, which alone can restore it."""

    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    sandbox_id: Mapped[str] = mapped_column(String(32), index=True)
    node: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    # Kept past its sandbox's deletion; otherwise deleted with it.
    keep: Mapped[bool] = mapped_column(default=False)
    image: Mapped[str] = mapped_column(String(512))
    image_ref: Mapped[str] = mapped_column(String(512))
    vcpus: Mapped[int]
    memory_mib: Mapped[int]
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IdempotencyRecord(Base):
    """A create in progress (``sandbox_id`` null) or done, for 24 h per (tenant, key)."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    sandbox_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class QuotaReservation(Base):
    """Resources held by a create that passed its quota check and has no sandbox row yet.

    It is counted with the tenant's running sandboxes, so that creates still booting take up
    their share; the transaction that writes the sandbox row deletes it (services.quotas).
    """

    __tablename__ = "quota_reservations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    vcpus: Mapped[int]
    memory_mib: Mapped[int]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# -- wire models (spec/api.md) -----------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


StrMap = dict[str, str]
GuestPath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class QuotaDetail(BaseModel):
    """spec/api.md "Quotas": the limit a 429 ``quota_exceeded`` ran into."""

    limit: Literal["sandboxes", "vcpus", "memory_mib"]
    max: int
    used: int
    requested: int


class Problem(BaseModel):
    """spec/api.md "Conventions": an RFC 9457 problem, the body of every error."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str
    errors: list[dict[str, Any]] | None = None
    sandbox_id: str | None = None
    state: str | None = None
    quota: QuotaDetail | None = None


class Health(BaseModel):
    """spec/api.md "Health"."""

    status: Literal["ok"]
    version: str
    accelerator: Literal["kvm", "tcg"]


class NetworkCreate(_Request):
    """spec/api.md "Network": a sandbox's egress policy and secrets, given at create.

    ``secrets`` are hostd's SecretSpec: ``{name, value, upstream, header?, base_url_env?}``.
    """

    profile: str = "locked-down"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    secrets: tuple[SecretSpec, ...] = ()

    def spec(self) -> NetworkSpec:
        """Raises: ValueError (pydantic): two secrets of one name."""
        policy = EgressPolicy(profile=self.profile, allow=self.allow, deny=self.deny)
        return NetworkSpec(policy=policy, secrets=self.secrets)


class NetworkUpdate(_Request):
    """spec/api.md "Network": PATCH /v1/sandboxes/{id}/network; what is given replaces the
    current value, what is left out stays. Secrets cannot change on a running sandbox."""

    profile: str | None = None
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] | None = None


class SecretPublic(NodeSecret):
    """A secret as the API shows it: its name, where it goes and the header it fills; never
    its value."""


class NetworkPublic(BaseModel):
    """spec/api.md "Network": GET /v1/sandboxes/{id}/network."""

    profile: str
    allow: list[str]
    deny: list[str]
    secrets: list[SecretPublic]
    drops: dict[str, int] | None = Field(
        description="packets the sandbox's namespace refused (dropped, spoofed); null while it "
        "is not running or on a node without a network"
    )


class SandboxCreate(_Request):
    """spec/api.md "Sandboxes": POST /v1/sandboxes.

    ``image`` null means "python", unless ``snapshot`` is given: then the snapshot's image,
    vCPUs and memory are the sandbox's, and ``image``, ``vcpus`` and ``memory_mib`` may only
    repeat them. ``network`` null means no egress at all, or with ``snapshot``, the network of
    the snapshot's sandbox.
    """

    image: str | None = Field(default=None, min_length=1, max_length=512)
    snapshot: str | None = Field(default=None, min_length=1, max_length=32)
    vcpus: int = Field(default=1, ge=MIN_VCPUS, le=MAX_VCPUS)
    memory_mib: int = Field(default=1024, ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)
    timeout_s: int = Field(default=300, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S)
    auto_hibernate_s: int | None = Field(default=None, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S)
    env: StrMap = Field(default_factory=dict)
    metadata: StrMap = Field(default_factory=dict)
    labels: StrMap = Field(default_factory=dict)
    network: NetworkCreate | None = None


class ForkCreate(_Request):
    """spec/api.md "Fork": POST /v1/sandboxes/{id}/fork."""

    count: int = Field(default=1, ge=1, le=MAX_FORKS)
    timeout_s: int | None = Field(default=None, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S)


class SnapshotCreate(_Request):
    """spec/api.md "Snapshots": POST /v1/sandboxes/{id}/snapshots."""

    keep: bool = False
    name: str | None = Field(default=None, min_length=1, max_length=200)


class SnapshotPublic(BaseModel):
    """spec/api.md "Snapshots": the Snapshot object."""

    id: str
    sandbox_id: str
    name: str | None
    keep: bool
    image: str
    image_ref: str
    vcpus: int
    memory_mib: int
    size_bytes: int
    created_at: dt.datetime


class SnapshotList(BaseModel):
    data: list[SnapshotPublic]
    next_cursor: str | None


class AuditEntry(NodeAuditEntry):
    """spec/api.md "Audit": one entry of its node's chain, as the node serves it; ``prev_mac``
    links it to the node's entry before (which may be another sandbox's)."""


class AuditList(BaseModel):
    data: list[AuditEntry]
    next_cursor: str | None


class AuditFinding(BaseModel):
    """The first entry of a node's chain that is not as written, and why."""

    seq: int
    reason: str = Field(
        description="altered, removed, reordered, truncated, unreadable, header or head"
    )


class AuditNodeReport(BaseModel):
    node: str
    ok: bool
    checked: int = Field(description="entries that chain correctly before first_bad")
    first_bad: AuditFinding | None


class AuditReport(BaseModel):
    """spec/api.md "Audit": GET /v1/audit/verify, one report per node."""

    ok: bool
    nodes: list[AuditNodeReport]


class SandboxUpdate(_Request):
    """spec/api.md "Sandboxes": POST /v1/sandboxes/{id}/keepalive (the only update)."""

    timeout_s: int = Field(ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S)


class SandboxUsage(BaseModel):
    """spec/api.md "Usage": what a sandbox has used from its creation to its stop (or now)."""

    vcpu_seconds: float
    gib_seconds: float
    cost_usd: float
    url_requests: int = Field(
        default=0, description="requests its public URLs let in, over the sandbox's whole life"
    )


class SandboxPublic(BaseModel):
    """spec/api.md "Sandboxes": the Sandbox object."""

    id: str
    image: str
    image_ref: str
    state: SandboxState
    vcpus: int
    memory_mib: int
    created_at: dt.datetime
    expires_at: dt.datetime
    env: StrMap
    metadata: StrMap
    labels: StrMap
    usage: SandboxUsage
    forked_from: str | None = None
    from_snapshot: str | None = None
    hibernated_at: dt.datetime | None = None
    auto_hibernate_s: int | None = None


class SandboxList(BaseModel):
    data: list[SandboxPublic]
    next_cursor: str | None


class ForkList(BaseModel):
    """spec/api.md "Fork": the clones, in no particular order."""

    data: list[SandboxPublic]
    next_cursor: None = None


class UsageLine(SandboxUsage):
    """spec/api.md "Usage": one sandbox's share of a window."""

    sandbox_id: str
    vcpus: int
    memory_mib: int
    start: dt.datetime
    end: dt.datetime


class UsageReport(SandboxUsage):
    """spec/api.md "Usage": GET /v1/usage, the tenant's totals over ``since`` .. ``until``."""

    since: dt.datetime | None
    until: dt.datetime
    data: list[UsageLine]


class ExecCreate(_Request):
    """spec/api.md "Exec": POST /v1/sandboxes/{id}/exec."""

    command: Annotated[list[str], Field(min_length=1)] | Annotated[str, Field(min_length=1)]
    env: StrMap = Field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    timeout_s: float = Field(default=0, ge=0, le=MAX_TIMEOUT_S)
    # At most one flow-control window, so it is written whole before any output is read.
    stdin: str | None = Field(default=None, max_length=MAX_STDIN_CHARS)

    @field_validator("stdin")
    @classmethod
    def _stdin_fits(cls, stdin: str | None) -> str | None:
        if stdin is not None and len(stdin.encode()) > MAX_STDIN_BYTES:
            raise ValueError(f"stdin is larger than {MAX_STDIN_BYTES} bytes as UTF-8")
        return stdin


class ExecStartEvent(BaseModel):
    """spec/api.md "Exec": the first NDJSON line of a streamed exec."""

    type: Literal["start"] = "start"
    pid: int


class ExecOutputEvent(BaseModel):
    """spec/api.md "Exec": a chunk of output, base64 of the raw bytes."""

    type: Literal["stdout", "stderr"]
    data: str


class ExecExitEvent(BaseModel):
    """spec/api.md "Exec": the last line of a streamed exec that ran to its end."""

    type: Literal["exit"] = "exit"
    exit_code: int | None
    signal: int | None
    timed_out: bool
    duration_ms: int


ExecEvent = ExecStartEvent | ExecOutputEvent | ExecExitEvent


class ExecResult(BaseModel):
    """spec/api.md "Exec": the buffered answer."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    duration_ms: int
    stdout: str
    stderr: str
    truncated: bool


class ProcessPublic(BaseModel):
    """spec/api.md "Exec": GET /v1/sandboxes/{id}/processes."""

    pid: int
    tag: str | None
    argv: list[str]
    running: bool
    exit_code: int | None
    signal: int | None


class ProcessList(BaseModel):
    data: list[ProcessPublic]
    next_cursor: None = None


class SignalCreate(_Request):
    signal: int = Field(ge=1, le=64)


TerminalSide = Annotated[int, Field(ge=1, le=MAX_TERMINAL_SIDE)]


class ShellCreate(_Request):
    """spec/api.md "Shells": POST /v1/sandboxes/{id}/shells; ``command`` None: a login bash,
    else /bin/sh."""

    command: Annotated[list[str], Field(min_length=1)] | None = None
    env: StrMap = Field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    cols: TerminalSide = 80
    rows: TerminalSide = 24
    scrollback_bytes: int = Field(
        default=SHELL_SCROLLBACK_BYTES,
        ge=MIN_SHELL_SCROLLBACK_BYTES,
        le=MAX_SHELL_SCROLLBACK_BYTES,
    )


class ShellPublic(BaseModel):
    """spec/api.md "Shells": a Shell."""

    id: str
    pid: int
    command: list[str]
    cols: int
    rows: int
    running: bool
    exit_code: int | None
    signal: int | None
    attached: int = Field(description="clients attached now")
    writer: bool = Field(description="whether one of them is the writer")
    started_at: dt.datetime


class ShellList(BaseModel):
    data: list[ShellPublic]
    next_cursor: None = None


class ShellResize(_Request):
    cols: TerminalSide
    rows: TerminalSide


class ShellSignal(_Request):
    signal: int = Field(ge=1, le=64)
    target: Literal["foreground", "shell"] = Field(
        default="foreground", description="foreground: the job in front, as a key would"
    )


class UrlCreate(_Request):
    """spec/api.md "URLs": POST /v1/sandboxes/{id}/urls."""

    port: int = Field(ge=1, le=65535, description="the port in the guest, on its loopback")
    expires_in_s: int = Field(default=3600, ge=1, description="at most ISORUN_URL_MAX_TTL_S")
    public: bool = Field(
        default=True,
        description="true: the URL alone lets a request in; false: requests also need an "
        "API key of the tenant in X-Isorun-Key",
    )


class UrlPublic(BaseModel):
    """spec/api.md "URLs": a signed URL to a port of a sandbox."""

    url: str = Field(description="the origin with the token in its query: open it as it is")
    origin: str = Field(description="https://{port}-{sandbox}.{domain}[:port], no token")
    token: str = Field(description="for X-Isorun-Token, when the URL's query cannot carry it")
    port: int
    public: bool
    expires_at: dt.datetime


class FileStatPublic(BaseModel):
    """spec/api.md "Files": FileStat."""

    name: str
    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ms: int
    link_target: str | None


class FileList(BaseModel):
    data: list[FileStatPublic]
    next_cursor: None = None


class FileWritten(BaseModel):
    path: str
    bytes: int


class MkdirCreate(_Request):
    path: GuestPath
    parents: bool = True


class RenameCreate(_Request):
    src: GuestPath
    dst: GuestPath
