"""A real deepagents agent loop, driven by a scripted fake model, against a real isorun VM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from deepagents import create_deep_agent
from isorun import AsyncSandbox, Sandbox
from isorun_langchain import AsyncIsorunSandbox, IsorunSandbox
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from tests.framework.isorun_up import Up

pytestmark = pytest.mark.vm


class ScriptedModel(GenericFakeChatModel):
    """Answers with the scripted messages in turn; tools are accepted and ignored."""

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self


HELLO = "hello from the model\n"


def script(directory: str) -> ScriptedModel:
    calls = [
        (
            "write_file",
            {"file_path": f"{directory}/hello.txt", "content": "hello from the model\n"},
        ),
        ("execute", {"command": f"cat {directory}/hello.txt; echo to-stderr >&2"}),
        ("execute", {"command": "ls /no/such/dir"}),
        ("execute", {"command": "sleep 30", "timeout": 2}),
        ("read_file", {"file_path": f"{directory}/missing.txt"}),
    ]
    messages = [
        AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call-{i}"}])
        for i, (name, args) in enumerate(calls)
    ]
    return ScriptedModel(messages=iter([*messages, AIMessage(content="done")]))


def tool_results(messages: list[BaseMessage]) -> dict[str, str]:
    return {str(m.tool_call_id): str(m.content) for m in messages if isinstance(m, ToolMessage)}


def assert_transcript(results: dict[str, str], directory: str) -> None:
    assert "Updated file" in results["call-0"] or directory in results["call-0"]
    assert "hello from the model" in results["call-1"]
    assert "to-stderr" in results["call-1"]
    assert "exit code 0" in results["call-1"]
    assert "No such file or directory" in results["call-2"]
    assert "exit code 2" in results["call-2"]
    assert "timed out" in results["call-3"]
    assert "exit code 124" in results["call-3"]
    assert "file_not_found" in results["call-4"]


def test_agent_loop_changes_the_vm_and_reports_failures(vm: Sandbox) -> None:
    backend = IsorunSandbox(sandbox=vm)
    agent = create_deep_agent(model=script("/tmp/sync"), backend=backend)

    state = agent.invoke({"messages": [{"role": "user", "content": "go"}]})

    assert_transcript(tool_results(state["messages"]), "/tmp/sync")
    assert state["messages"][-1].content == "done"
    assert vm.files.read_text("/tmp/sync/hello.txt") == HELLO
    assert backend.id == vm.id


async def test_async_agent_loop_on_the_same_vm(vm: Sandbox, up: Up) -> None:
    async_vm = await AsyncSandbox.connect(vm.id, api_url=up.url, api_key=up.key, timeout=120)
    try:
        agent = create_deep_agent(
            model=script("/tmp/async"), backend=AsyncIsorunSandbox(sandbox=async_vm)
        )
        state = await agent.ainvoke({"messages": [{"role": "user", "content": "go"}]})
    finally:
        await async_vm.aclose()

    assert_transcript(tool_results(state["messages"]), "/tmp/async")
    assert vm.files.read_text("/tmp/async/hello.txt") == HELLO
