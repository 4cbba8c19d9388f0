"""isorun sandboxes for LangChain and deepagents.

```python
from deepagents import create_deep_agent
from isorun import Sandbox
from isorun_langchain import IsorunSandbox

with Sandbox("python") as sb:
    agent = create_deep_agent(model, backend=IsorunSandbox(sandbox=sb))
```

`IsorunSandbox` / `AsyncIsorunSandbox` are deepagents sandbox backends (the `BaseSandbox`
interface langchain-e2b, -modal and -daytona implement); they need the `deepagents` extra
(`pip install 'isorun-langchain[deepagents]'`) and are imported on first use, so that the
plain-LangChain `IsorunToolkit` works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isorun_langchain._toolkit import IsorunToolkit

if TYPE_CHECKING:
    from isorun_langchain._sandbox import AsyncIsorunSandbox, IsorunSandbox

__all__ = ["AsyncIsorunSandbox", "IsorunSandbox", "IsorunToolkit"]

_DEEPAGENTS_NAMES = frozenset({"AsyncIsorunSandbox", "IsorunSandbox"})


def __getattr__(name: str) -> Any:
    # deepagents pulls langchain, langgraph and model providers: import it only when asked.
    if name in _DEEPAGENTS_NAMES:
        try:
            from isorun_langchain import _sandbox  # noqa: PLC0415
        except ModuleNotFoundError as error:
            msg = f"{name} needs deepagents: pip install 'isorun-langchain[deepagents]'"
            raise ImportError(msg) from error
        return getattr(_sandbox, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
