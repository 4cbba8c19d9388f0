"""The node API's wire models (spec/node.md), shared with the backend's RemoteNode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SANDBOX_ID_CHARS = 32
# Ids name run folders and socket paths, so they are kept to a safe alphabet.
SANDBOX_ID_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
NDJSON = "application/x-ndjson"
STAT_HEADER = "X-Isorun-Stat"

if TYPE_CHECKING:
    from isorun_hostd.audit import Entry, Report
    from isorun_hostd.snapshots import SnapshotMeta


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeInfo(BaseModel):
    """GET /node/v1/info: what placement needs to know about this node."""

    accelerator: Literal["kvm", "tcg"]
    vcpus_total: int
    vcpus_allocated: int
    memory_mib_total: int
    memory_mib_allocated: int
    images: list[str] = Field(description="references and pinned references cached here")


class NodeSandboxCreate(_Request):
    id: str = Field(max_length=MAX_SANDBOX_ID_CHARS, pattern=SANDBOX_ID_PATTERN)
    image_ref: str
    vcpus: int = Field(ge=1)
    mem_mib: int = Field(ge=1)


class NodeSandbox(BaseModel):
    id: str
    image_ref: str = Field(description="pinned: registry/repo@sha256:...")
    vcpus: int
    mem_mib: int


class NodeSandboxList(BaseModel):
    data: list[NodeSandbox]


class NodeExecCreate(_Request):
    command: list[str] | str
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    timeout_s: float = Field(default=0, ge=0)
    stdin: str | None = Field(default=None, description="base64; written whole, then closed")


class NodeSignal(_Request):
    signal: int = Field(gt=0, lt=128)


class NodeMkdir(_Request):
    path: str
    parents: bool = False


class NodeRename(_Request):
    src: str
    dst: str


class NodeWritten(BaseModel):
    bytes: int


class NodeProblem(BaseModel):
    """Every error answer, and the last line of an exec stream that failed after its start.

    ``error`` is the hostd exception's class name; ``reference`` (images) and ``op`` and
    ``agent_code`` (guest agent errors) let the backend rebuild the exception it stands for.
    """

    code: str
    detail: str
    error: str
    reference: str | None = None
    op: str | None = None
    agent_code: str | None = None


class NodeFork(_Request):
    """POST /sandboxes/{id}/fork: the clones' ids are chosen by the node."""

    count: int = Field(default=1, ge=1)


class NodeSnapshotCreate(_Request):
    """POST /sandboxes/{id}/snapshots: the backend names the snapshot, as it names sandboxes."""

    id: str = Field(max_length=MAX_SANDBOX_ID_CHARS, pattern=SANDBOX_ID_PATTERN)


class NodeRestore(_Request):
    """POST /snapshots/{snapshot_id}/restore: the new sandbox's id, chosen by the backend."""

    id: str = Field(max_length=MAX_SANDBOX_ID_CHARS, pattern=SANDBOX_ID_PATTERN)


class NodeSnapshot(BaseModel):
    """A saved sandbox state on this node: a named snapshot, or a hibernated sandbox."""

    id: str
    kind: Literal["snapshot", "hibernation"]
    source_sandbox_id: str
    image_ref: str = Field(description="pinned: registry/repo@sha256:...")
    vcpus: int
    mem_mib: int
    size_bytes: int
    created_unix: float

    @classmethod
    def from_meta(cls, meta: SnapshotMeta) -> NodeSnapshot:
        return cls(
            id=meta.snapshot_id,
            kind=meta.kind,
            source_sandbox_id=meta.source_sandbox_id,
            image_ref=meta.image.pinned,
            vcpus=meta.vcpus,
            mem_mib=meta.mem_mib,
            size_bytes=meta.size_bytes,
            created_unix=meta.created_unix,
        )


class NodeSnapshotList(BaseModel):
    data: list[NodeSnapshot]


class NodeAuditEntry(BaseModel):
    """One audit entry as written (docs/audit.md): ``mac`` covers the rest, ``prev_mac``
    included, so a client can follow the links."""

    seq: int
    time: str
    sandbox_id: str | None
    kind: str
    fields: dict[str, Any]
    prev_mac: str
    mac: str

    @classmethod
    def from_entry(cls, entry: Entry) -> NodeAuditEntry:
        return cls.model_validate(entry, from_attributes=True)


class NodeAuditList(BaseModel):
    """GET /audit: ``cursor`` is the last seq of a full page (pass it as ``after``), else null."""

    data: list[NodeAuditEntry]
    cursor: int | None

    @classmethod
    def page(cls, entries: list[Entry], limit: int) -> NodeAuditList:
        """The answer for ``entries``, read with ``limit``: a full page may have a next one."""
        return cls(
            data=[NodeAuditEntry.from_entry(entry) for entry in entries],
            cursor=entries[-1].seq if entries and len(entries) == limit else None,
        )


class NodeAuditFinding(BaseModel):
    seq: int
    reason: str = Field(
        description="altered, removed, reordered, truncated, unreadable, header, head"
    )
    detail: str


class NodeAuditReport(BaseModel):
    """GET /audit/verify: ``checked`` entries chain correctly before ``first_bad``."""

    ok: bool
    checked: int
    first_bad: NodeAuditFinding | None

    @classmethod
    def from_report(cls, report: Report) -> NodeAuditReport:
        bad = report.first_bad
        return cls(
            ok=report.ok,
            checked=report.checked,
            first_bad=None
            if bad is None
            else NodeAuditFinding(seq=bad.seq, reason=bad.reason, detail=bad.detail),
        )
