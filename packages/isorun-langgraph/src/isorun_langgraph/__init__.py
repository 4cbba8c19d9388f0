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
"""

from isorun_langgraph._sandboxes import THREAD_METADATA_KEY, ThreadSandboxes, thread_id_of

__all__ = ["THREAD_METADATA_KEY", "ThreadSandboxes", "thread_id_of"]
