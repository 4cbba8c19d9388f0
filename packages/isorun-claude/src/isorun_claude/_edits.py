"""The text editor tool's commands as pure functions over a file's text (no I/O).

```
command       input fields                          result
view          path, view_range?                     numbered lines  "{n:6}\t{line}"
create        path, file_text                       the new file's text
str_replace   path, old_str, new_str?               old_str must occur exactly once
insert        path, insert_line, new_str            after line insert_line (0 = top)
```

The tools in `_tools` read and write the guest's files around these; every refusal here is a
`ToolError`, which the tool runner turns into a `tool_result` with `is_error: true`, so the
model sees why and can try again.
"""

from __future__ import annotations

from collections.abc import Mapping

from anthropic.lib.tools import ToolError


def field(input: Mapping[str, object], name: str, kind: type[str] | type[int]) -> str | int:
    """Return `input[name]`, checked to be a `kind` (the model may send anything)."""
    value = input.get(name)
    # bool is an int subclass, and a line number of True is a model mistake worth reporting.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ToolError(f"`{name}` must be a {kind.__name__}")
    return value


def view(text: str, view_range: object = None, max_characters: int | None = None) -> str:
    """Number the lines of `text`, optionally only `view_range` ([first, last], 1-based, last
    -1 for the end), cut to `max_characters`."""
    lines = text.split("\n")
    first, last = 1, len(lines)
    if view_range is not None:
        if (
            not isinstance(view_range, list)
            or len(view_range) != 2
            or not all(isinstance(n, int) for n in view_range)
        ):
            raise ToolError("`view_range` must be [first_line, last_line]")
        first, last = view_range
        last = len(lines) if last == -1 else last
        if not 1 <= first <= last <= len(lines):
            raise ToolError(f"`view_range` {view_range} is outside lines 1..{len(lines)}")
    shown = "\n".join(f"{n:6}\t{line}" for n, line in enumerate(lines[first - 1 : last], first))
    if max_characters is not None and len(shown) > max_characters:
        return shown[:max_characters] + "\n<response clipped>"
    return shown


def str_replace(text: str, old_str: str, new_str: str) -> str:
    """Replace the one occurrence of `old_str` in `text` by `new_str`."""
    count = text.count(old_str)
    if count == 0:
        raise ToolError("No replacement was performed: `old_str` does not occur in the file")
    if count > 1:
        raise ToolError(
            f"No replacement was performed: `old_str` occurs {count} times; "
            "include more context to make it unique"
        )
    return text.replace(old_str, new_str, 1)


def insert(text: str, insert_line: int, new_str: str) -> str:
    """Insert `new_str` after line `insert_line` of `text` (0 inserts at the top)."""
    lines = text.split("\n")
    if not 0 <= insert_line <= len(lines):
        raise ToolError(f"`insert_line` {insert_line} is outside 0..{len(lines)}")
    return "\n".join([*lines[:insert_line], *new_str.split("\n"), *lines[insert_line:]])
