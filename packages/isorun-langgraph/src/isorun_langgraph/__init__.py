"""isorun sandboxes for LangGraph: one microVM per conversation (`thread_id`).

```python
from isorun_langgraph import ThreadSandboxes
from langgraph.prebuilt import ToolNode

with ThreadSandboxes("python") as sandboxes:
    tools = ToolNode(sandboxes.tools())      # or create_agent(model, sandboxes.tools())
    ...                                      # a plain node: sandboxes.get(config)
    graph.invoke(inputs, {"configurable": {"thread_id": "t1"}})
```

`ThreadSandboxes` (`_sandboxes`) maps each `thread_id` to a sandbox booted on first use and
kept out of graph state; `_tools` holds the exec / read / write tools built on it.
`TimeTravelSandboxes` (`_time_travel`) also snapshots the VM after each side-effecting step and
restores it to match the checkpoint a graph replays or forks from.
"""

from isorun_langgraph._sandboxes import THREAD_METADATA_KEY, ThreadSandboxes, thread_id_of
from isorun_langgraph._time_travel import SNAPSHOT_KEY, SandboxState, TimeTravelSandboxes

__all__ = [
    "SNAPSHOT_KEY",
    "THREAD_METADATA_KEY",
    "SandboxState",
    "ThreadSandboxes",
    "TimeTravelSandboxes",
    "thread_id_of",
]
