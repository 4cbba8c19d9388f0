"""`IsorunToolkit`: each tool invoked as an agent's tool node would, on a real VM and on a fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import isorun_langchain
import pytest
from isorun import Sandbox
from isorun.testing import FakeBackend
from isorun_langchain import IsorunToolkit
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool


def call(tools: list[BaseTool], name: str, **args: Any) -> ToolMessage:
    tool = next(t for t in tools if t.name == name)
    message = tool.invoke({"type": "tool_call", "name": name, "id": f"id-{name}", "args": args})
    assert isinstance(message, ToolMessage)
    return message


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def fake_tools(fake: FakeBackend) -> Iterator[list[BaseTool]]:
    with Sandbox("python", transport=fake, api_key=fake.api_key) as sandbox:
        yield IsorunToolkit(sandbox=sandbox, timeout_s=7).get_tools()


def test_tool_names_and_model_visible_arguments(fake_tools: list[BaseTool]) -> None:
    schemas = {t.name: convert_to_openai_tool(t)["function"]["parameters"] for t in fake_tools}

    assert set(schemas) == {
        "sandbox_exec",
        "sandbox_read_file",
        "sandbox_write_file",
        "sandbox_list_dir",
    }
    assert set(schemas["sandbox_exec"]["properties"]) == {"command", "timeout_s"}
    assert schemas["sandbox_exec"]["required"] == ["command"]
    assert schemas["sandbox_write_file"]["properties"]["content"]["description"]


def test_exec_success_carries_its_exit_code_as_artifact(
    fake: FakeBackend, fake_tools: list[BaseTool]
) -> None:
    fake.script_exec("echo hi", stdout="hi\n", stderr="warn\n")

    message = call(fake_tools, "sandbox_exec", command="echo hi")

    assert message.status == "success"
    assert message.content == "hi\nwarn"
    assert message.artifact == {"exit_code": 0, "truncated": False}
    assert fake.exec_calls[0].timeout_s == 7


@pytest.mark.parametrize(
    ("scripted", "expected"),
    [
        ({"stderr": "boom\n", "exit_code": 3}, "Command failed with exit code 3.\nboom"),
        (
            {"exit_code": None, "timed_out": True},
            "Command failed with exit code 124.\nCommand timed out after 7 seconds.",
        ),
    ],
)
def test_exec_failure_is_an_error_message(
    fake: FakeBackend, fake_tools: list[BaseTool], scripted: dict[str, Any], expected: str
) -> None:
    fake.script_exec("false", **scripted)

    message = call(fake_tools, "sandbox_exec", command="false")

    assert message.status == "error"
    assert message.content == expected


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("sandbox_read_file", {"path": "/nope/a.txt"}),
        ("sandbox_list_dir", {"path": "/nope"}),
    ],
)
def test_missing_path_is_an_error_message(
    fake_tools: list[BaseTool], name: str, args: dict[str, str]
) -> None:
    message = call(fake_tools, name, **args)

    assert message.status == "error"
    assert "/nope" in str(message.content)


@pytest.mark.vm
def test_tools_on_a_real_vm(vm: Sandbox) -> None:
    tools = IsorunToolkit(sandbox=vm).get_tools()

    wrote = call(tools, "sandbox_write_file", path="/tmp/kit/a.txt", content="héllo\n")
    listed = call(tools, "sandbox_list_dir", path="/tmp/kit")
    read = call(tools, "sandbox_read_file", path="/tmp/kit/a.txt")
    ran = call(tools, "sandbox_exec", command="wc -c < /tmp/kit/a.txt")
    failed = call(tools, "sandbox_exec", command="cat /tmp/kit/missing")
    timed_out = call(tools, "sandbox_exec", command="sleep 30", timeout_s=2)

    assert wrote.content == "Wrote 7 bytes to /tmp/kit/a.txt."
    assert listed.content == "a.txt"
    assert listed.artifact[0]["size"] == 7
    assert read.content == "héllo\n"
    assert (ran.content, ran.artifact) == ("7", {"exit_code": 0, "truncated": False})
    assert failed.status == "error"
    assert "exit code 1" in str(failed.content)
    assert "No such file" in str(failed.content)
    assert timed_out.status == "error"
    assert "exit code 124" in str(timed_out.content)
    assert vm.files.read_text("/tmp/kit/a.txt") == "héllo\n"


def test_exported_members() -> None:
    assert isorun_langchain.__all__ == sorted(isorun_langchain.__all__)
    assert all(getattr(isorun_langchain, name) for name in isorun_langchain.__all__)
