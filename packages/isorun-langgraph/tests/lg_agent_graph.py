"""The test agent: a scripted fake chat model and the graph built on `ThreadSandboxes`.

```
START -> prepare (plain node: sandboxes.get(config)) -> agent <-> tools (ToolNode)
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from isorun_langgraph import ThreadSandboxes, thread_id_of
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

PREPARED_PATH = "/tmp/thread_id"


class ScriptedModel(GenericFakeChatModel):
    """Answers the scripted messages in order, and records what it was shown each turn."""

    seen: list[list[BaseMessage]] = []  # noqa: RUF012 - pydantic copies the default per instance

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        # The base class refuses bind_tools; the script already names the tools.
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def scripted(*turns: AIMessage) -> ScriptedModel:
    return ScriptedModel(messages=iter(turns))


def tool_call(name: str, call_id: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}])


def build_agent(
    sandboxes: ThreadSandboxes,
    model: ScriptedModel,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The agent loop, behind a plain node that writes the thread id into the thread's VM."""

    def prepare(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        sandboxes.get(config).files.write(PREPARED_PATH, thread_id_of(config))
        return {}

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("prepare", prepare)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(sandboxes.tools()))
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer)
