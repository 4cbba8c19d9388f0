"""isorun sandboxes for the OpenAI Agents SDK: `agents.sandbox` runs a `SandboxAgent` in a VM.

```python
from agents import Runner, RunConfig
from agents.run_config import SandboxRunConfig
from isorun_openai_agents import IsorunSandboxClient, IsorunSandboxClientOptions

config = RunConfig(sandbox=SandboxRunConfig(
    client=IsorunSandboxClient(), options=IsorunSandboxClientOptions(image="python")))
result = await Runner.run(agent, "list the workspace", run_config=config)
```
`_client` has the lifecycle, `_session` the mapping of SDK primitives to isorun calls, and
`_pty` the shell tool's PTY sessions.
"""

from isorun_openai_agents._client import IsorunSandboxClient
from isorun_openai_agents._options import IsorunSandboxClientOptions
from isorun_openai_agents._session import IsorunSandboxSession, IsorunSandboxSessionState

__all__ = [
    "IsorunSandboxClient",
    "IsorunSandboxClientOptions",
    "IsorunSandboxSession",
    "IsorunSandboxSessionState",
]
