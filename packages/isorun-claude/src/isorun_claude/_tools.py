"""Anthropic-defined client tools served from an isorun sandbox, for `tool_runner`.

```
client.beta.messages.tool_runner(tools=[IsorunBashTool(sb), IsorunTextEditorTool(sb)], ...)
  request carries  {"type": "bash_20250124", "name": "bash"}
                   {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}
  tool_use         -> tool.call(input) -> sb.exec / sb.files -> tool_result
  guest failure    -> ToolError -> tool_result {is_error: true}; the loop goes on
```

Guest-side failures (a non-zero exit, a timeout, a missing file, a file the guest refuses)
are `ToolError`s, the tool runner's convention for an error the model should read (see
`_output`).
"""

from __future__ import annotations

from anthropic.lib.tools import BetaBuiltinFunctionTool, BetaFunctionToolResultType, ToolError
from anthropic.types.beta import BetaToolUnionParam
from isorun import Sandbox

from isorun_claude import _edits
from isorun_claude._output import exec_output, guest_file_errors

DEFAULT_TIMEOUT_S = 120.0


class IsorunBashTool(BetaBuiltinFunctionTool):
    """The `bash_20250124` tool, each command run by `bash -c` in the sandbox.

    Each command is a fresh `bash` in `cwd`: files persist between calls, shell variables and
    `cd` do not (`restart` therefore only acknowledges).

    Args:
        sandbox: The sandbox to run commands in; the caller owns it (and destroys it).
        cwd: Working directory of every command; the guest's default when None.
        timeout_s: Kill a command after this long; the model then gets an error result.
    """

    def __init__(
        self, sandbox: Sandbox, *, cwd: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.sandbox = sandbox
        self.cwd = cwd
        self.timeout_s = timeout_s

    def to_dict(self) -> BetaToolUnionParam:
        return {"type": "bash_20250124", "name": "bash"}

    def call(self, input: object) -> BetaFunctionToolResultType:
        """Run `input["command"]`; `{"restart": true}` only acknowledges.

        Raises:
            ToolError: The command exited non-zero or timed out (its output is in the error).
        """
        if not isinstance(input, dict):
            raise ToolError("input must be an object")
        if input.get("restart"):
            return "bash tool has been restarted"
        command = _edits.field(input, "command", str)
        result = self.sandbox.exec(
            ["bash", "-c", str(command)], cwd=self.cwd, timeout_s=self.timeout_s
        )
        return exec_output(result, self.timeout_s)


class IsorunTextEditorTool(BetaBuiltinFunctionTool):
    """The `text_editor_20250728` tool (`str_replace_based_edit_tool`) on the sandbox's files.

    Commands `view` (a file, or a directory two levels deep), `create`, `str_replace` and
    `insert`; this tool version has no `undo_edit`.

    Args:
        sandbox: The sandbox whose files are edited; the caller owns it.
        max_characters: Cut `view` answers to this many characters; sent to the API too.
    """

    def __init__(self, sandbox: Sandbox, *, max_characters: int | None = None) -> None:
        self.sandbox = sandbox
        self.max_characters = max_characters

    def to_dict(self) -> BetaToolUnionParam:
        if self.max_characters is None:
            return {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}
        return {
            "type": "text_editor_20250728",
            "name": "str_replace_based_edit_tool",
            "max_characters": self.max_characters,
        }

    def call(self, input: object) -> BetaFunctionToolResultType:
        """Run one editor command.

        Raises:
            ToolError: An unknown command, a bad argument, a missing file or one the guest
                refuses to read or write.
        """
        if not isinstance(input, dict):
            raise ToolError("input must be an object")
        path = str(_edits.field(input, "path", str))
        with guest_file_errors(path):
            return self._run(str(input.get("command")), path, input)

    def _run(self, command: str, path: str, input: dict[str, object]) -> str:
        files = self.sandbox.files
        if command == "view":
            if files.stat(path).is_dir:
                listing = self.sandbox.exec(["find", path, "-maxdepth", "2", "-not", "-name", ".*"])
                return exec_output(listing, None)
            text = files.read_text(path, errors="replace")
            return _edits.view(text, input.get("view_range"), self.max_characters)
        if command == "create":
            files.write(path, str(_edits.field(input, "file_text", str)), parents=True)
            return f"File created successfully at: {path}"
        if command == "str_replace":
            new_str = input.get("new_str", "")
            if not isinstance(new_str, str):
                raise ToolError("`new_str` must be a str")
            old_str = str(_edits.field(input, "old_str", str))
            files.write(path, _edits.str_replace(files.read_text(path), old_str, new_str))
            return f"The file {path} has been edited"
        if command == "insert":
            line = int(_edits.field(input, "insert_line", int))
            new_str = str(_edits.field(input, "new_str", str))
            files.write(path, _edits.insert(files.read_text(path), line, new_str))
            return f"The file {path} has been edited"
        raise ToolError(f"Unknown command {command!r}: use view, create, str_replace or insert")
