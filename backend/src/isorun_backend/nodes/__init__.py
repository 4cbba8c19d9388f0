"""Nodes: the hostds the backend runs sandboxes on (embedded in-process, or remote over HTTP).

```
Node            base.py       the interface the services use; hostd's errors, NodeUnavailable
EmbeddedNode    embedded.py   hostd's Runtime in this process (ISORUN_NODES empty)
RemoteNode      remote.py     `isorun-hostd serve` over HTTP with a node token (ISORUN_NODES)
place()         placement.py  room first, then image-cache affinity, then least loaded
```
"""

from isorun_backend.nodes.base import Node, NodePort, NodeProcess, NodeShell, NodeUnavailable
from isorun_backend.nodes.embedded import EMBEDDED, EmbeddedNode
from isorun_backend.nodes.placement import place
from isorun_backend.nodes.remote import RemoteNode

__all__ = [
    "EMBEDDED",
    "EmbeddedNode",
    "Node",
    "NodePort",
    "NodeProcess",
    "NodeShell",
    "NodeUnavailable",
    "RemoteNode",
    "place",
]
