"""The bash / text editor tools and the `@beta_tool` helpers over `FakeBackend`: schemas sent
to the API, results, and guest failures as `ToolError` (the runner's `is_error`)."""

from __future__ import annotations

import pytest
from anthropic.lib.tools import ToolError
from isorun import Sandbox
from isorun.testing import FakeBackend
from isorun_claude import IsorunBashTool, IsorunTextEditorTool, sandbox_tools

Fake = tuple[FakeBackend, Sandbox]


def test_tool_params_are_the_anthropic_defined_types(fake_sandbox: Fake) -> None:
    _, sb = fake_sandbox
    assert IsorunBashTool(sb).to_dict() == {"type": "bash_20250124", "name": "bash"}
    assert IsorunTextEditorTool(sb).to_dict() == {
        "type": "text_editor_20250728",
        "name": "str_replace_based_edit_tool",
    }
    assert IsorunTextEditorTool(sb, max_characters=10).to_dict()["max_characters"] == 10  # type: ignore[typeddict-item]


def test_bash_runs_under_bash_in_cwd_and_joins_output(fake_sandbox: Fake) -> None:
    fake, sb = fake_sandbox
    fake.script_exec(["bash", "-c", "ls"], stdout="a\n", stderr="warn\n")
    assert IsorunBashTool(sb, cwd="/work", timeout_s=5).call({"command": "ls"}) == "a\n\nwarn\n"
    assert (fake.exec_calls[0].cwd, fake.exec_calls[0].timeout_s) == ("/work", 5)


@pytest.mark.parametrize(
    ("exit_code", "timed_out", "tail"),
    [(2, False, "[exit code 2]"), (None, True, "[timed out after 120.0 s]")],
)
def test_bash_failure_is_a_tool_error_with_the_output(
    fake_sandbox: Fake, exit_code: int | None, timed_out: bool, tail: str
) -> None:
    fake, sb = fake_sandbox
    fake.script_exec(["bash", "-c", "x"], stderr="boom", exit_code=exit_code, timed_out=timed_out)
    with pytest.raises(ToolError) as caught:
        IsorunBashTool(sb).call({"command": "x"})
    assert caught.value.content == f"boom\n{tail}"


def test_bash_restart_and_bad_input(fake_sandbox: Fake) -> None:
    fake, sb = fake_sandbox
    assert IsorunBashTool(sb).call({"restart": True}) == "bash tool has been restarted"
    with pytest.raises(ToolError, match="`command` must be a str"):
        IsorunBashTool(sb).call({"command": 3})
    assert fake.exec_calls == []


def test_editor_create_view_replace_insert(fake_sandbox: Fake) -> None:
    _, sb = fake_sandbox
    editor = IsorunTextEditorTool(sb)
    editor.call({"command": "create", "path": "/w/a.py", "file_text": "one\ntwo\nthree"})
    editor.call({"command": "str_replace", "path": "/w/a.py", "old_str": "two", "new_str": "2"})
    editor.call({"command": "insert", "path": "/w/a.py", "insert_line": 0, "new_str": "zero"})
    assert sb.files.read_text("/w/a.py") == "zero\none\n2\nthree"
    shown = editor.call({"command": "view", "path": "/w/a.py", "view_range": [2, -1]})
    assert shown == "     2\tone\n     3\t2\n     4\tthree"


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({"command": "view", "path": "/nope"}, "/nope: no such file or directory"),
        ({"command": "str_replace", "path": "/f", "old_str": "zz"}, "does not occur"),
        ({"command": "str_replace", "path": "/f", "old_str": "a"}, "occurs 2 times"),
        ({"command": "insert", "path": "/f", "insert_line": 9, "new_str": "x"}, "outside 0..1"),
        ({"command": "view", "path": "/f", "view_range": [3, 1]}, "outside lines 1..1"),
        ({"command": "undo_edit", "path": "/f"}, "Unknown command 'undo_edit'"),
        ({"command": "create", "path": "/f"}, "`file_text` must be a str"),
    ],
)
def test_editor_refusals_are_tool_errors(
    fake_sandbox: Fake, input: dict[str, object], message: str
) -> None:
    _, sb = fake_sandbox
    sb.files.write("/f", "a a")
    with pytest.raises(ToolError, match=message):
        IsorunTextEditorTool(sb).call(input)
    assert sb.files.read_text("/f") == "a a"


def test_view_clips_to_max_characters(fake_sandbox: Fake) -> None:
    _, sb = fake_sandbox
    sb.files.write("/f", "x" * 50)
    shown = IsorunTextEditorTool(sb, max_characters=10).call({"command": "view", "path": "/f"})
    assert shown == "     1\txxx\n<response clipped>"


def test_sandbox_tools_schemas_and_calls(fake_sandbox: Fake) -> None:
    fake, sb = fake_sandbox
    exec_tool, read_tool, write_tool = sandbox_tools(sb)
    assert [t.name for t in (exec_tool, read_tool, write_tool)] == [
        "sandbox_exec",
        "sandbox_read_file",
        "sandbox_write_file",
    ]
    assert exec_tool.to_dict()["input_schema"]["required"] == ["command"]
    assert write_tool.call({"path": "/d/f.txt", "content": "hi"}) == "wrote 2 bytes to /d/f.txt"
    assert read_tool.call({"path": "/d/f.txt"}) == "hi"
    fake.script_exec(["bash", "-c", "false"], exit_code=1)
    with pytest.raises(ToolError, match=r"\[exit code 1\]"):
        exec_tool.call({"command": "false"})
    with pytest.raises(ToolError, match="no such file"):
        read_tool.call({"path": "/missing"})
