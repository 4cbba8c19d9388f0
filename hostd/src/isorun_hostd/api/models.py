"""The node API's wire models (spec/node.md), shared with the backend's RemoteNode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from isorun_hostd.agent_channel.protocol import (
    MAX_SHELL_SCROLLBACK_BYTES,
    MAX_TERMINAL_SIDE,
    MIN_SHELL_SCROLLBACK_BYTES,
    SHELL_SCROLLBACK_BYTES,
)
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec, SecretSpec

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
    network: NetworkSpec | None = Field(default=None, description="null: no egress at all")


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


class NodeShellCreate(_Request):
    """POST /sandboxes/{id}/shells; ``command`` None: a login bash, else /bin/sh."""

    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    cols: int = Field(default=80, ge=1, le=MAX_TERMINAL_SIDE)
    rows: int = Field(default=24, ge=1, le=MAX_TERMINAL_SIDE)
    scrollback_bytes: int = Field(
        default=SHELL_SCROLLBACK_BYTES,
        ge=MIN_SHELL_SCROLLBACK_BYTES,
        le=MAX_SHELL_SCROLLBACK_BYTES,
    )


class NodeShellResize(_Request):
    cols: int = Field(ge=1, le=MAX_TERMINAL_SIDE)
    rows: int = Field(ge=1, le=MAX_TERMINAL_SIDE)


class NodeShellSignal(_Request):
    signal: int = Field(gt=0, lt=128)
    target: Literal["foreground", "shell"] = "foreground"


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
    """POST /snapshots/{snapshot_id}/restore: the new sandbox's id, chosen by the backend, and
    its network (snapshots keep no secrets, so the backend sends them again)."""

    id: str = Field(max_length=MAX_SANDBOX_ID_CHARS, pattern=SANDBOX_ID_PATTERN)
    network: NetworkSpec | None = None


class NodeResume(_Request):
    """POST /sandboxes/{id}/resume: the sandbox's network, which a restarted node no longer
    knows; null: the one it hibernated with, if this node process still holds it."""

    network: NetworkSpec | None = None


class NodeSecret(BaseModel):
    """A secret as the node shows it: where it goes, never its value."""

    name: str
    upstream: str
    header_name: str
    base_url_env: str | None

    @classmethod
    def from_spec(cls, secret: SecretSpec) -> Self:
        return cls(
            name=secret.name,
            upstream=str(secret.upstream),
            header_name=secret.header_name,
            base_url_env=secret.base_url_env,
        )


class NodeNetwork(BaseModel):
    """GET /sandboxes/{id}/network: the policy enforced now, the secrets the proxy injects and
    the packets the namespace refused (``dropped``, ``spoofed``; null on a node without a
    network)."""

    policy: EgressPolicy
    secrets: list[NodeSecret]
    drops: dict[str, int] | None

    @classmethod
    def from_spec(cls, spec: NetworkSpec, drops: dict[str, int] | None) -> NodeNetwork:
        secrets = [NodeSecret.from_spec(secret) for secret in spec.secrets]
        return cls(policy=spec.policy, secrets=secrets, drops=drops)


def network_json(spec: NetworkSpec) -> dict[str, Any]:
    """``spec`` as JSON with the secrets' values in clear, which pydantic masks: only for the
    backend's requests to a node (token-authenticated) and the backend's own store."""
    body = spec.model_dump(mode="json")
    for secret, out in zip(spec.secrets, body["secrets"], strict=True):
        out["value"] = secret.value.get_secret_value()
    return body


def request_json(body: BaseModel) -> dict[str, Any]:
    """A request model as JSON, its ``network`` (if any) with the secrets' values in clear."""
    out = body.model_dump(mode="json", exclude_none=True)
    network = getattr(body, "network", None)
    if isinstance(network, NetworkSpec):
        out["network"] = network_json(network)
    return out


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
