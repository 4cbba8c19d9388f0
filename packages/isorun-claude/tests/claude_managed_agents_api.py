"""The Managed Agents API endpoints one self-hosted session item touches, played in memory.

Session `sess_1`'s event stream holds the scripted `agent.tool_use`s and then an idle that
ends the turn; the worker heartbeats, reads the session, dispatches the call, posts the
`user.tool_result` and force-stops the work item. `sent` and `stopped` record what it posted.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2

AT = "2026-11-28T00:00:00Z"
WORK = "/v1/environments/env_1/work/work_1"
SESSION = "/v1/sessions/sess_1"


class ManagedAgentsAPI:
    def __init__(self, *tool_uses: tuple[str, dict[str, Any]]) -> None:
        """`tool_uses`: (name, input) pairs, given the ids tu_1, tu_2, ..."""
        self.events: list[dict[str, Any]] = [
            {"type": "agent.tool_use", "id": f"tu_{n}", "name": name, "input": input}
            for n, (name, input) in enumerate(tool_uses, 1)
        ]
        self.events.append(
            {"type": "session.status_idle", "id": "idle_1", "stop_reason": {"type": "end_turn"}}
        )
        self.sent: list[dict[str, Any]] = []
        self.stopped: list[str] = []
        heartbeat = {
            "type": "work_heartbeat",
            "last_heartbeat": AT,
            "lease_extended": True,
            "state": "active",
            "ttl_seconds": 60,
        }
        session = {"id": "sess_1", "type": "session", "status": "running", "agent": {"skills": []}}
        self.answers: dict[tuple[str, str], dict[str, Any]] = {
            ("POST", f"{WORK}/heartbeat"): heartbeat,
            ("POST", f"{WORK}/stop"): {},
            ("GET", SESSION): session,
            ("GET", f"{SESSION}/events"): {"data": [], "next_page": None},
            ("POST", f"{SESSION}/events"): {"data": []},
        }

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path, method = request.url.path, request.method
        if path == f"{SESSION}/events/stream":
            body = "".join(
                f"event: {event['type']}\ndata: {json.dumps({**event, 'processed_at': AT})}\n\n"
                for event in self.events
            )
            return httpx2.Response(
                200, content=body.encode(), headers={"content-type": "text/event-stream"}
            )
        if (method, path) == ("POST", f"{SESSION}/events"):
            self.sent.extend(json.loads(request.content)["events"])
        if (method, path) == ("POST", f"{WORK}/stop"):
            self.stopped.append(path)
        answer = self.answers.get((method, path))
        if answer is None:
            return httpx2.Response(
                404, json={"type": "error", "error": {"type": "not_found_error"}}
            )
        return httpx2.Response(200, json=answer)

    def results(self) -> dict[str, tuple[bool, str]]:
        """The posted tool results: tool_use id -> (is_error, text)."""
        return {
            event["tool_use_id"]: (
                event.get("is_error", False),
                "".join(block["text"] for block in event["content"]),
            )
            for event in self.sent
            if event["type"] == "user.tool_result"
        }

    def client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key="sk-test",
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self)),
            max_retries=0,
        )
