"""isorun sandboxes as Claude tools.

```python
import anthropic
from isorun import Sandbox
from isorun_claude import IsorunBashTool, IsorunTextEditorTool

with Sandbox("python") as sb:
    runner = anthropic.Anthropic().beta.messages.tool_runner(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        tools=[IsorunBashTool(sb), IsorunTextEditorTool(sb)],
        messages=[{"role": "user", "content": "Write hello.py and run it"}],
    )
    print(runner.until_done().content)
```

`IsorunBashTool` / `IsorunTextEditorTool` serve the Anthropic-defined `bash_20250124` and
`text_editor_20250728` tools (`_tools`); `sandbox_tools` gives plain `@beta_tool` function
tools (`_functions`); `isorun_agent_toolset` the Claude Managed Agents tools (`_agent_toolset`),
which `isorun_claude.worker` serves with one VM per session. The Claude Agent SDK server is in
`isorun_claude.agent_sdk` (extra `agent-sdk`). Guest-side failures reach the model as
`is_error` tool results.
"""

from isorun_claude._agent_toolset import isorun_agent_toolset
from isorun_claude._functions import sandbox_tools
from isorun_claude._tools import IsorunBashTool, IsorunTextEditorTool

__all__ = ["IsorunBashTool", "IsorunTextEditorTool", "isorun_agent_toolset", "sandbox_tools"]
