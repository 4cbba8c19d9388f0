"""End to end: anthropic's `tool_runner` loop, a scripted Messages API as the model, and the
tools acting on a real isorun VM behind `isorun up`."""

from __future__ import annotations

from typing import Any

import pytest
from claude_messages_api import ScriptedModel, text, tool_use
from isorun import Sandbox
from isorun_claude import IsorunBashTool, IsorunTextEditorTool, sandbox_tools

pytestmark = pytest.mark.vm

SCRIPT = 'print("hello from", 6 * 7)\n'


def result_text(block: dict[str, Any]) -> str:
    content = block["content"]
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


def test_tool_runner_edits_and_runs_in_the_vm(vm: Sandbox) -> None:
    model = ScriptedModel(
        [
            [
                tool_use(
                    "t1",
                    "str_replace_based_edit_tool",
                    {"command": "create", "path": "/tmp/claude/hello.py", "file_text": SCRIPT},
                )
            ],
            [
                tool_use("t2", "bash", {"command": "cd /tmp/claude && python3 hello.py"}),
                tool_use("t3", "bash", {"command": "cat /tmp/claude/missing.txt"}),
                tool_use("t4", "sandbox_read_file", {"path": "/tmp/claude/hello.py"}),
            ],
            [text("done")],
        ]
    )
    runner = model.client().beta.messages.tool_runner(
        model="claude-test",
        max_tokens=256,
        messages=[{"role": "user", "content": "write hello.py and run it"}],
        tools=[IsorunBashTool(vm), IsorunTextEditorTool(vm), *sandbox_tools(vm)],
    )

    final = runner.until_done()

    assert final.content[0].type == "text" and final.content[0].text == "done"
    assert model.requests[0]["tools"][:2] == [
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    ]
    assert vm.files.read_text("/tmp/claude/hello.py") == SCRIPT
    created, ran, failed, read = model.tool_results()
    assert [block["tool_use_id"] for block in (created, ran, failed, read)] == [
        "t1",
        "t2",
        "t3",
        "t4",
    ]
    assert not created.get("is_error") and "created" in result_text(created)
    assert not ran.get("is_error") and result_text(ran).strip() == "hello from 42"
    assert failed["is_error"] is True
    assert "No such file" in result_text(failed) and "[exit code 1]" in result_text(failed)
    assert result_text(read) == SCRIPT
