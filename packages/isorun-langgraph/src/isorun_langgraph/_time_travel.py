"""`TimeTravelSandboxes`: a thread's VM follows the graph's checkpoints.

```
state["isorun_snapshot"]     the snapshot id of the VM as of this checkpoint (a string: any
                             checkpointer stores it; no live handle enters the state)

get(config, state)           the thread's VM as of the state's snapshot: if the live VM has
                             moved on elsewhere (a replay, an update_state fork), a VM restored
                             from that snapshot replaces it
snapshot node (after tools)  a VM that was handed out since its last snapshot is snapshotted;
                             the node returns {"isorun_snapshot": id} into the checkpoint
```

So a replay from an earlier checkpoint, or a branch made with `update_state`, runs against
the VM as it was at that checkpoint. A state without a snapshot yet maps to the VM as first
booted, which is snapshotted at once. Every snapshot is kept (`keep=True`) while the thread
lives, since any checkpoint may be replayed, and deleted with the thread (`release`, `close`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired

from isorun import NotFound, Sandbox
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.graph import MessagesState

from isorun_langgraph import _tools
from isorun_langgraph._sandboxes import ThreadSandboxes, thread_id_of

SNAPSHOT_KEY = "isorun_snapshot"
"""The graph state key holding the VM's snapshot id at each checkpoint."""


class SandboxState(MessagesState):
    """`MessagesState` plus the VM's snapshot id; extend it for a graph of your own."""

    isorun_snapshot: NotRequired[str | None]


@dataclass
class _Track:
    base: str  # the VM as first booted: what a state without a snapshot id stands for
    at: str  # the snapshot the live VM continues from
    touched: bool = False  # handed out since `at`, so possibly changed
    snapshots: list[str] = field(default_factory=list)  # deleted with the thread


class TimeTravelSandboxes(ThreadSandboxes):
    """`ThreadSandboxes` whose VMs are snapshotted after each side-effecting step and restored
    to match the checkpoint a graph runs from.

    Build the graph on `SandboxState` (or a state with an `isorun_snapshot` key), give its
    `ToolNode` these `tools()`, and route the tool node through `snapshot_node` back to the
    model. Plain nodes that touch the VM call `get(config, state)` and should be followed by
    `snapshot_node` too. Arguments are those of `ThreadSandboxes`.

    Example:
        >>> graph.add_node("tools", ToolNode(sandboxes.tools()))  # doctest: +SKIP
        >>> graph.add_node("snapshot", sandboxes.snapshot_node)  # doctest: +SKIP
        >>> graph.add_edge("tools", "snapshot")  # doctest: +SKIP
        >>> graph.add_edge("snapshot", "agent")  # doctest: +SKIP
    """

    def __init__(self, image: str = "python", **options: Any) -> None:
        super().__init__(image, **options)
        self._tracks: dict[str, _Track] = {}
        self._track_locks: dict[str, threading.Lock] = {}

    def get(
        self, config: RunnableConfig | None = None, state: Mapping[str, Any] | None = None
    ) -> Sandbox:
        """Return the thread's sandbox as of `state`'s checkpoint (see the module docstring).

        Without `state` the live VM is returned as it is.

        Raises:
            isorun.SnapshotNotFound: The state names a snapshot that was deleted.
            isorun.IsorunError: A boot, snapshot or restore failed.
        """
        thread_id = thread_id_of(config)
        sandbox = super().get(config)
        with self._lock:
            lock = self._track_locks.setdefault(thread_id, threading.Lock())
        with lock:
            track = self._tracks.get(thread_id)
            if track is None:
                base = sandbox.snapshot(keep=True).id
                track = self._tracks[thread_id] = _Track(base=base, at=base, snapshots=[base])
            wanted = track.at if state is None else (state.get(SNAPSHOT_KEY) or track.base)
            if wanted != track.at:
                sandbox = self._replace(thread_id, sandbox, wanted)
                track.at = wanted
            track.touched = True
            return sandbox

    def snapshot_node(self, state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        """A graph node: snapshot the thread's VM if it was handed out since its last snapshot,
        and record the id in the checkpoint; otherwise change nothing."""
        thread_id = thread_id_of(config)
        with self._lock:
            lock = self._track_locks.setdefault(thread_id, threading.Lock())
            sandbox = self._sandboxes.get(thread_id)
        with lock:
            track = self._tracks.get(thread_id)
            if sandbox is None or track is None or not track.touched:
                return {}
            snapshot = sandbox.snapshot(keep=True)
            track.snapshots.append(snapshot.id)
            track.at, track.touched = snapshot.id, False
        return {SNAPSHOT_KEY: snapshot.id}

    def tools(self) -> list[BaseTool]:
        """The exec / read / write tools, each resolving the VM as of the calling state."""
        return _tools.sandbox_tools(self.get, with_state=True)

    def release(self, thread_id: str) -> None:
        """Destroy the thread's VM and delete every snapshot taken for it."""
        try:
            super().release(thread_id)
        finally:
            with self._lock:
                track = self._tracks.pop(thread_id, None)
            if track is not None:
                self._delete_snapshots(track.snapshots)

    def close(self) -> None:
        with self._lock:
            tracks = list(self._tracks.values())
            self._tracks.clear()
        try:
            for track in tracks:
                self._delete_snapshots(track.snapshots)
        finally:
            super().close()

    def _replace(self, thread_id: str, old: Sandbox, snapshot_id: str) -> Sandbox:
        restored = self._boot(thread_id, snapshot=snapshot_id)
        with self._lock:
            self._sandboxes[thread_id] = restored
        old.destroy()
        return restored

    def _delete_snapshots(self, snapshot_ids: list[str]) -> None:
        for snapshot_id in snapshot_ids:
            try:
                self._client.snapshots.delete(snapshot_id)
            except NotFound:
                continue  # gone already
