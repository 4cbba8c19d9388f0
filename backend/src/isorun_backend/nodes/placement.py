"""Placement: which node gets a new sandbox. A pure function of the nodes' reports.

Only nodes with room for the sandbox's vCPUs and memory qualify; among them a node that has the
image cached wins (no pull, no disk build), then the least loaded (the fuller of its vCPU and
memory fractions), then the name, so that equal nodes are picked the same way every time.
"""

from __future__ import annotations

from collections.abc import Mapping

from isorun_hostd.api.models import NodeInfo


def place(nodes: Mapping[str, NodeInfo], *, vcpus: int, mem_mib: int, image_ref: str) -> str | None:
    """The name of the node to create on, or None when no node has room."""
    fitting = [
        (name, info)
        for name, info in nodes.items()
        if info.vcpus_total - info.vcpus_allocated >= vcpus
        and info.memory_mib_total - info.memory_mib_allocated >= mem_mib
    ]
    if not fitting:
        return None
    name, _ = min(
        fitting,
        key=lambda item: (image_ref not in item[1].images, _load(item[1]), item[0]),
    )
    return name


def _load(info: NodeInfo) -> float:
    return max(
        info.vcpus_allocated / max(info.vcpus_total, 1),
        info.memory_mib_allocated / max(info.memory_mib_total, 1),
    )
