"""Time travel against real VMs: replaying, or forking with `update_state`, from an earlier
checkpoint runs against the VM as it was at that checkpoint.

```
run 1:  agent: write a.txt -> tools -> snapshot(s1) -> agent: write b.txt -> tools ->
        snapshot(s2) -> agent: done
replay from the checkpoint after s1:  agent: ls /tmp -> tools (VM restored from s1: a.txt,
        no b.txt) -> snapshot -> agent: done
fork the same checkpoint with update_state: the same, on a branch of its own
```
"""

from __future__ import annotations

from typing import Any

import isorun
import pytest
from isorun_langgraph import SNAPSHOT_KEY, SandboxState, TimeTravelSandboxes
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from lg_agent_graph import ScriptedModel, scripted, tool_call

from tests.framework.isorun_up import Up

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

THREAD = {"configurable": {"thread_id": "travel"}}


def build(
    sandboxes: TimeTravelSandboxes, model: ScriptedModel
) -> CompiledStateGraph[Any, Any, Any, Any]:
    def agent(state: SandboxState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(SandboxState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(sandboxes.tools()))
    graph.add_node("snapshot", sandboxes.snapshot_node)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "snapshot")
    graph.add_edge("snapshot", "agent")
    return graph.compile(checkpointer=InMemorySaver())


def last_listing(state: dict[str, Any]) -> list[str]:
    tool_messages = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    return str(tool_messages[-1].content).split()


def test_replay_and_fork_see_the_vm_of_their_checkpoint(up: Up) -> None:
    model = scripted(
        tool_call("sandbox_write_file", "a", path="/tmp/tt/a.txt", content="A"),
        tool_call("sandbox_write_file", "b", path="/tmp/tt/b.txt", content="B"),
        AIMessage("done"),
        tool_call("sandbox_exec", "ls-replay", command="ls /tmp/tt"),
        AIMessage("replayed"),
        tool_call("sandbox_exec", "ls-fork", command="ls /tmp/tt; echo c > /tmp/tt/c.txt"),
        AIMessage("forked"),
    )
    with TimeTravelSandboxes(api_url=up.url, api_key=up.key, timeout_s=600) as sandboxes:
        graph = build(sandboxes, model)
        final = graph.invoke({"messages": [HumanMessage("write two files")]}, THREAD)
        assert final["messages"][-1].content == "done"
        assert sandboxes.get(THREAD).exec("ls /tmp/tt").stdout.split() == ["a.txt", "b.txt"]

        # The checkpoint after the first tool step's snapshot, about to call the model.
        after_a = next(
            snapshot
            for snapshot in graph.get_state_history(THREAD)
            if snapshot.next == ("agent",)
            and any(
                isinstance(m, ToolMessage) and m.tool_call_id == "a"
                for m in snapshot.values["messages"]
            )
            and not any(
                isinstance(m, ToolMessage) and m.tool_call_id == "b"
                for m in snapshot.values["messages"]
            )
        )
        first_snapshot = after_a.values[SNAPSHOT_KEY]
        assert first_snapshot and first_snapshot != final[SNAPSHOT_KEY]

        replayed = graph.invoke(None, after_a.config)
        assert replayed["messages"][-1].content == "replayed"
        assert last_listing(replayed) == ["a.txt"]

        branch = graph.update_state(after_a.config, {"messages": [HumanMessage("look again")]})
        forked = graph.invoke(None, branch)
        assert forked["messages"][-1].content == "forked"
        assert last_listing(forked) == ["a.txt"]
        # The branch's VM went on from s1; the thread now runs on it.
        assert sandboxes.get(THREAD).exec("ls /tmp/tt").stdout.split() == ["a.txt", "c.txt"]

        with isorun.Client(api_url=up.url, api_key=up.key) as client:
            assert first_snapshot in {s.id for s in client.snapshots.list()}
    # Closing deletes the thread's VM and every snapshot taken for it.
    with isorun.Client(api_url=up.url, api_key=up.key) as client:
        assert list(client.snapshots.list()) == []
        assert list(isorun.Sandbox.list(client=client, state="running")) == []
