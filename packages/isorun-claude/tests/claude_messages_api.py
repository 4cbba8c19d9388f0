"""A scripted Messages API to play the model in tests.

It answers through an `httpx2.MockTransport` (the anthropic 2.x client sends through `httpx2`,
which respx does not patch): it replays scripted `tool_use` turns and records every request, so
a test can read the `tool_result`s the tool runner sent back.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2


class ScriptedModel:
    """Messages API answers, one per request, in order; `requests` holds the bodies sent."""

    def __init__(self, turns: list[list[dict[str, Any]]]) -> None:
        self.turns = iter(turns)
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(json.loads(request.content))
        content = next(self.turns)
        stop = "tool_use" if any(block["type"] == "tool_use" for block in content) else "end_turn"
        return httpx2.Response(
            200,
            json={
                "id": f"msg_{len(self.requests)}",
                "type": "message",
                "role": "assistant",
                "model": "claude-test",
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        )

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key="sk-test", http_client=httpx2.Client(transport=httpx2.MockTransport(self))
        )

    def tool_results(self) -> list[dict[str, Any]]:
        """Every `tool_result` block the runner sent, in order."""
        return [
            block
            for body in self.requests
            for message in body["messages"]
            if message["role"] == "user" and isinstance(message["content"], list)
            for block in message["content"]
            if block["type"] == "tool_result"
        ]


def tool_use(id: str, name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}
