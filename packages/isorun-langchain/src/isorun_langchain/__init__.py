"""isorun sandboxes for LangChain.

```python
from isorun import Sandbox
from isorun_langchain import IsorunToolkit

with Sandbox("python") as sb:
    tools = IsorunToolkit(sandbox=sb).get_tools()  # sandbox_exec, sandbox_read_file, ...
```
"""

from isorun_langchain._toolkit import IsorunToolkit

__all__ = ["IsorunToolkit"]
