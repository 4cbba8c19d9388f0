"""The LangGraph agent loop against real isorun VMs (`isorun up --local-images`), two threads.

```
thread a, call 1: prepare -> agent: write /tmp/note.txt -> tools -> agent: done
thread b, call 1: prepare -> agent: cat /tmp/note.txt (exit 1 in b's VM) -> tools -> agent: done
thread a, call 2: prepare -> agent: cat /tmp/note.txt + thread id -> tools -> agent: done
```
Two VMs in all; closing `ThreadSandboxes` deletes both.
"""

from __future__ import annotations

from typing import Any

import isorun
import pytest
from isorun_langgraph import THREAD_METADATA_KEY, ThreadSandboxes
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from lg_agent_graph import PREPARED_PATH, build_agent, scripted, tool_call

from tests.framework.isorun_up import Up

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]


def thread(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


def contains_sandbox(value: Any) -> bool:
    if isinstance(value, isorun.Sandbox):
        return True
    if isinstance(value, dict):
        return any(contains_sandbox(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_sandbox(v) for v in value)
    return False


def test_agent_loop_gets_one_vm_per_thread(up: Up) -> None:
    model = scripted(
        tool_call("sandbox_write_file", "a1", path="/tmp/note.txt", content="hello from a"),
        AIMessage("wrote it"),
        tool_call("sandbox_exec", "b1", command="cat /tmp/note.txt"),
        AIMessage("b has no note"),
        tool_call("sandbox_exec", "a2", command=f"cat /tmp/note.txt {PREPARED_PATH}"),
        AIMessage("read it back"),
    )
    saver = InMemorySaver()
    connection = {"api_url": up.url, "api_key": up.key}
    with ThreadSandboxes("python", timeout_s=600, **connection) as sandboxes:
        graph = build_agent(sandboxes, model, saver)
        graph.invoke({"messages": [HumanMessage("write a note")]}, thread("a"))
        b_out = graph.invoke({"messages": [HumanMessage("read the note")]}, thread("b"))
        a_out = graph.invoke({"messages": [HumanMessage("read it again")]}, thread("a"))

        a_id = sandboxes.get(thread("a")).id
        b_id = sandboxes.get(thread("b")).id
        assert a_id != b_id
        listed = {info.id: info.metadata for info in isorun.Sandbox.list(**connection)}
        assert listed[a_id] == {THREAD_METADATA_KEY: "a"}
        assert listed[b_id] == {THREAD_METADATA_KEY: "b"}

        # Thread b's VM is not a's: the cat fails, and the model is shown the failure.
        b_result = b_out["messages"][-2]
        assert isinstance(b_result, ToolMessage)
        assert b_result.status == "error"
        assert str(b_result.content).startswith("exit code 1\n")
        assert "No such file" in str(b_result.content)
        assert model.seen[3][-1] == b_result

        # Thread a's second call reads what its first call wrote, in the same VM, and the
        # checkpointer gave the agent the first call's messages back.
        a_result = a_out["messages"][-2]
        assert isinstance(a_result, ToolMessage)
        assert (a_result.status, a_result.content) == ("success", "hello from aa")
        assert [m.content for m in a_out["messages"] if isinstance(m, HumanMessage)] == [
            "write a note",
            "read it again",
        ]

        # The checkpoint holds messages, never the live handle (nor its id).
        saved = saver.get_tuple(thread("a"))
        assert saved is not None
        assert not contains_sandbox(saved.checkpoint)
        _, blob = saver.serde.dumps_typed(saved.checkpoint)
        assert a_id.encode() not in blob

    remaining = {info.id for info in isorun.Sandbox.list(**connection)}
    assert not remaining & {a_id, b_id}
