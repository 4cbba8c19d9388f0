"""The node interface: everything the services do with a hostd, embedded or remote.

A node raises hostd's own errors (ImageError, VMError, NoRoom, AgentError, ChannelError,
SnapshotNotFound, SnapshotError, StateError, NetworkError, and ValueError for a network the node
cannot give: PolicyError, or a node without a network), so
that the services translate them in one place whichever node ran the sandbox; a remote node
rebuilds them from the node API's problem bodies. A sandbox the node does not have is a
ChannelClosed, as a VM that died under a channel would be. A node that cannot be reached (or
refuses our token) is NodeUnavailable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

from isorun_hostd.agent_channel import ExecEnd, FileStat, Output
from isorun_hostd.agent_channel.protocol import ProcessList, ShellInfo, ShellOpened
from isorun_hostd.api.models import (
    NodeAuditList,
    NodeAuditReport,
    NodeInfo,
    NodeNetwork,
    NodeSandbox,
    NodeShellCreate,
    NodeSnapshot,
)
from isorun_hostd.api.shell_frames import SignalTarget
from isorun_hostd.api.shell_socket import TerminalStream
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec
from isorun_hostd.sandboxes import ExecOptions

from isorun_backend.services.errors import Unavailable


class NodeUnavailable(Unavailable):
    """The node did not answer, or refused this backend's node token."""

    def __init__(self, node: str, detail: str) -> None:
        super().__init__(f"node {node}: {detail}")
        self.node = node


class NodeProcess(Protocol):
    """A process started on a node: its pid, its output until it ends, then how it ended."""

    pid: int

    def output(self) -> AsyncIterator[Output]: ...

    async def wait(self) -> ExecEnd: ...

    async def detach(self) -> None:
        """Stop following it; it keeps running in the guest."""


class NodeShell(TerminalStream, Protocol):
    """A stream attached to a shell on a node (spec/node.md "Shells"); ``detach`` when done,
    and the shell keeps running."""

    async def detach(self) -> None: ...


class NodePort(Protocol):
    """A TCP connection to a port on a sandbox's loopback (spec/node.md "Ports").

    ``read`` gives ``b""`` once the guest side has closed; ``write_eof`` half-closes ours;
    ``aclose`` drops the connection (the guest socket is closed at once).
    """

    async def read(self) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def write_eof(self) -> None: ...

    async def aclose(self) -> None: ...


class Node(ABC):
    """One hostd. ``start`` before use, ``aclose`` at shutdown.

    ``keeps_vms`` says whether its VMs outlive this backend process (a remote node), or die
    with it (the embedded runtime destroys them at ``aclose``).
    """

    name: str
    keeps_vms: bool

    @abstractmethod
    async def start(self) -> None:
        """Get ready to serve; a remote node that is down now is not an error here."""

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def info(self) -> NodeInfo: ...

    @abstractmethod
    async def create(
        self,
        sandbox_id: str,
        image_ref: str,
        *,
        vcpus: int,
        mem_mib: int,
        network: NetworkSpec | None = None,
    ) -> NodeSandbox:
        """Boot a sandbox with ``network`` (None: no egress at all)."""

    @abstractmethod
    async def destroy(self, sandbox_id: str) -> None:
        """Destroy the sandbox's VM; one that is gone already is not an error."""

    @abstractmethod
    async def sandboxes(self) -> list[NodeSandbox]: ...

    @abstractmethod
    async def exec(
        self,
        sandbox_id: str,
        command: list[str] | str,
        options: ExecOptions,
        stdin: bytes | None = None,
    ) -> NodeProcess:
        """Start a process; ``stdin`` (at most one credit window) is written whole, then
        closed, before this returns."""

    @abstractmethod
    async def processes(self, sandbox_id: str) -> ProcessList: ...

    @abstractmethod
    async def signal(self, sandbox_id: str, pid: int, signum: int) -> None: ...

    @abstractmethod
    async def read_file(
        self, sandbox_id: str, path: str
    ) -> tuple[FileStat, AsyncIterator[bytes]]: ...

    @abstractmethod
    async def write_file(
        self,
        sandbox_id: str,
        path: str,
        content: AsyncIterable[bytes],
        *,
        mode: int,
        parents: bool,
    ) -> int: ...

    @abstractmethod
    async def list_dir(self, sandbox_id: str, path: str) -> list[FileStat]: ...

    @abstractmethod
    async def stat(self, sandbox_id: str, path: str) -> FileStat: ...

    @abstractmethod
    async def mkdir(self, sandbox_id: str, path: str, parents: bool) -> None: ...

    @abstractmethod
    async def rename(self, sandbox_id: str, src: str, dst: str) -> None: ...

    @abstractmethod
    async def remove(self, sandbox_id: str, path: str, recursive: bool) -> None: ...

    # -- shells (spec/node.md "Shells") ---------------------------------------------------------

    @abstractmethod
    async def open_shell(self, sandbox_id: str, request: NodeShellCreate) -> ShellOpened: ...

    @abstractmethod
    async def shells(self, sandbox_id: str) -> list[ShellInfo]:
        """Running shells and those ended within the agent's exit TTL, by start."""

    @abstractmethod
    async def attach_shell(
        self, sandbox_id: str, shell_id: str, *, write: bool, scrollback: bool
    ) -> NodeShell:
        """Follow a shell (its scrollback first with ``scrollback``); the writer with
        ``write``."""

    @abstractmethod
    async def resize_shell(self, sandbox_id: str, shell_id: str, cols: int, rows: int) -> None: ...

    @abstractmethod
    async def signal_shell(
        self, sandbox_id: str, shell_id: str, signum: int, target: SignalTarget
    ) -> None: ...

    @abstractmethod
    async def close_shell(self, sandbox_id: str, shell_id: str) -> None:
        """Hang the shell up (SIGKILL after 2 s) and forget it."""

    # -- ports (spec/node.md "Ports") -----------------------------------------------------------

    @abstractmethod
    async def connect_port(self, sandbox_id: str, port: int) -> NodePort:
        """Connect to ``port`` on the sandbox's loopback (the public URLs' way in).

        Raises:
            AgentError: ``refused`` when nothing listens there.
        """

    # -- saved states (spec/node.md "Snapshots") --------------------------------------------

    @abstractmethod
    async def fork(self, sandbox_id: str, count: int) -> list[NodeSandbox]:
        """``count`` clones of the running sandbox, all or none; the node names them."""

    @abstractmethod
    async def snapshot(self, sandbox_id: str, snapshot_id: str) -> NodeSnapshot:
        """Save the running sandbox (it pauses, then continues) as ``snapshot_id``."""

    @abstractmethod
    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot; one that is gone already is not an error."""

    @abstractmethod
    async def restore(
        self, snapshot_id: str, sandbox_id: str, *, network: NetworkSpec | None = None
    ) -> NodeSandbox:
        """A new sandbox ``sandbox_id`` continuing from the snapshot, with its own identity
        and ``network`` (snapshots keep no secrets)."""

    @abstractmethod
    async def hibernate(self, sandbox_id: str) -> NodeSnapshot:
        """Save the sandbox to disk and destroy its VM; on failure it keeps running."""

    @abstractmethod
    async def resume(self, sandbox_id: str, *, network: NetworkSpec | None = None) -> NodeSandbox:
        """Bring a hibernated sandbox back under its id with ``network`` (a restarted node no
        longer knows it); on failure its state is kept."""

    @abstractmethod
    async def forget_hibernation(self, sandbox_id: str) -> None:
        """Remove a hibernated sandbox's saved state; absent is fine."""

    # -- network (spec/node.md "Network") ------------------------------------------------------

    @abstractmethod
    async def network(self, sandbox_id: str) -> NodeNetwork:
        """The running sandbox's policy, secrets (no values) and drop counters."""

    @abstractmethod
    async def set_policy(self, sandbox_id: str, policy: EgressPolicy) -> EgressPolicy:
        """Replace the running sandbox's egress policy; the one now enforced."""

    # -- audit (spec/node.md "Audit") -------------------------------------------------------

    @abstractmethod
    async def audit_entries(self, sandbox_id: str, *, after: int, limit: int) -> NodeAuditList:
        """The sandbox's audit entries with seq > ``after`` (also once it is destroyed)."""

    @abstractmethod
    async def audit_verify(self) -> NodeAuditReport:
        """Verify the node's whole audit chain."""
