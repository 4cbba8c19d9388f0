"""The Managed Agents `agent_toolset_20260401` tools on an isorun sandbox: the names and input
schemas of anthropic's reference toolset, and their behaviour on FakeBackend and a real VM."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.lib.tools import BetaAsyncFunctionTool, ToolError
from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401
from isorun import AsyncSandbox, Sandbox
from isorun.testing import FakeBackend
from isorun_claude import isorun_agent_toolset

from tests.framework.isorun_up import Up

Tools = dict[str, BetaAsyncFunctionTool[Any]]


def by_name(sandbox: AsyncSandbox, workdir: str = "/workspace") -> Tools:
    return {tool.name: tool for tool in isorun_agent_toolset(sandbox, workdir=workdir)}


async def test_same_names_and_schemas_as_the_reference(tmp_path: Any) -> None:
    fake = FakeBackend()
    async with AsyncSandbox.create(
        "python", transport=fake, api_key=fake.api_key, api_url="http://fake"
    ) as sb:
        ours = [tool.to_dict() for tool in isorun_agent_toolset(sb)]
    reference = [tool.to_dict() for tool in beta_agent_toolset_20260401(AgentToolContext(tmp_path))]
    assert [t["name"] for t in ours] == ["bash", "read", "write", "edit", "glob", "grep"]
    assert [(t["name"], t["input_schema"]) for t in ours] == [  # type: ignore[typeddict-item]
        (t["name"], t["input_schema"])  # type: ignore[typeddict-item]
        for t in reference
    ]


async def test_file_tools_and_failures_over_fake_backend() -> None:
    fake = FakeBackend()
    async with AsyncSandbox.create(
        "python", transport=fake, api_key=fake.api_key, api_url="http://fake"
    ) as sb:
        tools = by_name(sb)
        assert await tools["write"].call({"file_path": "a/b.txt", "content": "x y x"}) == (
            "wrote 5 bytes to a/b.txt"
        )
        assert await sb.files.read_text("/workspace/a/b.txt") == "x y x"
        with pytest.raises(ToolError, match="appears 2 times"):
            await tools["edit"].call({"file_path": "a/b.txt", "old_string": "x", "new_string": "z"})
        edited = await tools["edit"].call(
            {"file_path": "a/b.txt", "old_string": "x", "new_string": "z", "replace_all": True}
        )
        assert edited == "edited a/b.txt (2 replacement(s))"
        assert await tools["read"].call({"file_path": "/workspace/a/b.txt"}) == "z y z"
        with pytest.raises(ToolError, match=r"missing\.txt: no such file"):
            await tools["read"].call({"file_path": "missing.txt"})
        fake.script_exec(["bash", "-c", "exit 3"], exit_code=3)
        with pytest.raises(ToolError, match=r"\[exit code 3\]"):
            await tools["bash"].call({"command": "exit 3", "timeout_ms": 5000})
        assert (fake.exec_calls[-1].cwd, fake.exec_calls[-1].timeout_s) == ("/workspace", 5)


@pytest.mark.vm
async def test_toolset_on_a_real_vm(up: Up, vm: Sandbox) -> None:
    sb = await AsyncSandbox.connect(vm.id, api_url=up.url, api_key=up.key)
    try:
        await sb.files.mkdir("/tmp/cma")
        tools = by_name(sb, workdir="/tmp/cma")
        await tools["write"].call({"file_path": "src/app.py", "content": "print('v1')\n"})
        await tools["write"].call({"file_path": "src/my notes.md", "content": "TODO: ship\n"})
        await tools["edit"].call(
            {"file_path": "src/app.py", "old_string": "v1", "new_string": "v2"}
        )
        ran = await tools["bash"].call({"command": "python3 src/app.py && pwd"})
        globbed = await tools["glob"].call({"pattern": "**/*.py"})
        spaced = await tools["glob"].call({"pattern": "src/my *"})
        none = await tools["glob"].call({"pattern": "*.rs"})
        grepped = await tools["grep"].call({"pattern": "TO+DO", "path": "src"})
        no_match = await tools["grep"].call({"pattern": "absent"})
        with pytest.raises(ToolError, match="No such file"):
            await tools["bash"].call({"command": "cat nope"})
    finally:
        await sb.aclose()
    assert ran == "v2\n/tmp/cma\n"
    assert globbed == "src/app.py\n"
    assert spaced == "src/my notes.md\n"
    assert none == "no matches"
    assert grepped == "/tmp/cma/src/my notes.md:1:TODO: ship\n"
    assert no_match == "no matches"
    assert vm.files.read_text("/tmp/cma/src/app.py") == "print('v2')\n"
