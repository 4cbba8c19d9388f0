"""`ThreadSandboxes` and its tools over `isorun.testing.FakeBackend` (no VM)."""

from __future__ import annotations

import threading
from typing import Any

import isorun
import isorun_langgraph
import pytest
from isorun.testing import FakeBackend
from isorun_langgraph import THREAD_METADATA_KEY, ThreadSandboxes
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolCall, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from lg_agent_graph import PREPARED_PATH, build_agent, scripted, tool_call


def call(name: str, call_id: str, **args: Any) -> ToolCall:
    return {"name": name, "args": args, "id": call_id}


def thread(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def sandboxes(fake: FakeBackend) -> Any:
    with ThreadSandboxes(transport=fake, api_key=fake.api_key) as pool:
        yield pool


def test_exports() -> None:
    assert isorun_langgraph.__all__ == [
        "SNAPSHOT_KEY",
        "THREAD_METADATA_KEY",
        "SandboxState",
        "ThreadSandboxes",
        "TimeTravelSandboxes",
        "thread_id_of",
    ]


def test_one_sandbox_per_thread_created_lazily(
    fake: FakeBackend, sandboxes: ThreadSandboxes
) -> None:
    assert fake.sandbox_ids == []
    a = sandboxes.get(thread("a"))
    assert sandboxes.get(thread("a")) is a
    b = sandboxes.get(thread("b"))
    assert a.id != b.id
    assert sorted(fake.sandbox_ids) == sorted([a.id, b.id])
    assert a.info.metadata == {THREAD_METADATA_KEY: "a"}


def test_parallel_calls_of_one_thread_boot_one_sandbox(
    fake: FakeBackend, sandboxes: ThreadSandboxes
) -> None:
    got: list[isorun.Sandbox] = []
    workers = [
        threading.Thread(target=lambda: got.append(sandboxes.get(thread("a")))) for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(fake.sandbox_ids) == 1
    assert {sb.id for sb in got} == set(fake.sandbox_ids)


def test_release_and_close_destroy(fake: FakeBackend) -> None:
    sandboxes = ThreadSandboxes(transport=fake, api_key=fake.api_key)
    a = sandboxes.get(thread("a"))
    b = sandboxes.get(thread("b"))
    sandboxes.release("a")
    assert fake.sandbox_ids == [b.id]
    assert sandboxes.get(thread("a")).id != a.id
    sandboxes.close()
    assert fake.sandbox_ids == []
    sandboxes.close()
    with pytest.raises(isorun.UsageError, match="closed"):
        sandboxes.get(thread("a"))


def test_no_thread_id_is_a_usage_error(sandboxes: ThreadSandboxes) -> None:
    with pytest.raises(isorun.UsageError, match="thread_id"):
        sandboxes.get({})
    graph = build_agent(sandboxes, scripted(AIMessage("done")))
    with pytest.raises(isorun.UsageError, match="thread_id"):
        graph.invoke({"messages": [HumanMessage("go")]})


def test_client_and_connection_options_are_exclusive(fake: FakeBackend) -> None:
    with (
        isorun.Client(transport=fake, api_key=fake.api_key) as client,
        pytest.raises(isorun.UsageError),
    ):
        ThreadSandboxes(client=client, api_key=fake.api_key)


def test_tool_schemas_hide_the_config(sandboxes: ThreadSandboxes) -> None:
    schemas = {tool.name: set(tool.args) for tool in sandboxes.tools()}
    assert schemas == {
        "sandbox_exec": {"command", "timeout_s"},
        "sandbox_read_file": {"path"},
        "sandbox_write_file": {"path", "content"},
    }


def test_guest_failures_become_error_tool_messages(
    fake: FakeBackend, sandboxes: ThreadSandboxes
) -> None:
    fake.script_exec("false", exit_code=3, stderr="nope\n")
    fake.script_exec("sleep 9", timed_out=True, exit_code=None)
    fake.script_exec("echo hi", stdout="hi\n")
    model = scripted(
        AIMessage(
            "",
            tool_calls=[
                {"name": "sandbox_exec", "args": {"command": "false"}, "id": "c1"},
                {
                    "name": "sandbox_exec",
                    "args": {"command": "sleep 9", "timeout_s": 1},
                    "id": "c2",
                },
                {"name": "sandbox_read_file", "args": {"path": "/missing"}, "id": "c3"},
                {"name": "sandbox_exec", "args": {"command": "echo hi"}, "id": "c4"},
            ],
        ),
        AIMessage("done"),
    )
    out = build_agent(sandboxes, model).invoke({"messages": [HumanMessage("go")]}, thread("a"))
    results = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert [results[c].status for c in ("c1", "c2", "c3", "c4")] == [
        "error",
        "error",
        "error",
        "success",
    ]
    assert results["c1"].content == "exit code 3\nnope\n"
    assert str(results["c2"].content).startswith("timed out after 1.0 s")
    assert str(results["c3"].content).startswith("/missing: ")
    assert results["c4"].content == "hi\n"
    # The model's second turn was shown all four results.
    assert [type(m) for m in model.seen[1][-4:]] == [ToolMessage] * 4


def test_plain_node_and_tools_share_the_thread_sandbox(sandboxes: ThreadSandboxes) -> None:
    model = scripted(
        tool_call("sandbox_write_file", "w", path="/w/a.txt", content="x"),
        tool_call("sandbox_read_file", "r", path=PREPARED_PATH),
        AIMessage("done"),
    )
    out = build_agent(sandboxes, model).invoke({"messages": [HumanMessage("go")]}, thread("t7"))
    assert out["messages"][-2].content == "t7"
    assert out["messages"][2].content == "wrote /w/a.txt (1 bytes)"
    assert sandboxes.get(thread("t7")).files.read_text("/w/a.txt") == "x"


def test_create_agent_uses_the_thread_sandbox(
    fake: FakeBackend, sandboxes: ThreadSandboxes
) -> None:
    model = scripted(
        tool_call("sandbox_write_file", "w", path="/w/a.txt", content="x"),
        AIMessage("done"),
    )
    agent = create_agent(model, sandboxes.tools(), checkpointer=InMemorySaver())
    out = agent.invoke({"messages": [HumanMessage("go")]}, thread("ca"))
    assert out["messages"][-2].content == "wrote /w/a.txt (1 bytes)"
    assert sandboxes.get(thread("ca")).files.read_text("/w/a.txt") == "x"
    assert len(fake.sandbox_ids) == 1


def test_every_thread_sandbox_gets_the_network_options(fake: FakeBackend) -> None:
    secret = isorun.Secret(name="OPENAI_API_KEY", value="sk-1", upstream="https://api.openai.com")
    with ThreadSandboxes(
        allow=["pypi.org"],
        deny=["0.0.0.0/0"],
        profile="openai",
        secrets=[secret],
        transport=fake,
        api_key=fake.api_key,
    ) as pool:
        for thread_id in ("t1", "t2"):
            sent = fake.network_of(pool.get(thread(thread_id)).id)
            assert sent is not None
            assert (sent["allow"], sent["deny"], sent["profile"]) == (
                ["pypi.org"],
                ["0.0.0.0/0"],
                "openai",
            )
            assert [s["name"] for s in sent["secrets"]] == ["OPENAI_API_KEY"]
