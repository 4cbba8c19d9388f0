"""A scripted Messages API to play the model in tests.

It replays scripted `tool_use` turns and records every request, so a test can read the
`tool_result`s the agent loop sent back. Two ways to reach it:

```
ScriptedModel.client()      anthropic 2.x client over an `httpx2.MockTransport` (respx does not
                            patch httpx2), for anthropic's own `tool_runner`
serve_on_loopback(model)    an HTTP server on 127.0.0.1 for the Claude Code CLI: POST
                            /v1/messages answered as a streamed (SSE) or plain message; any
                            other request (another endpoint, a proxy CONNECT) answered 404 and
                            recorded in `Loopback.strays`
```
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import httpx2

NOT_FOUND = {"type": "error", "error": {"type": "not_found_error", "message": "not scripted"}}
SCRIPT_DONE = {"type": "error", "error": {"type": "invalid_request_error", "message": "no turns"}}


class ScriptedModel:
    """Messages API answers, one per request, in order; `requests` holds the bodies sent."""

    def __init__(self, turns: list[list[dict[str, Any]]]) -> None:
        self.turns = iter(turns)
        self.requests: list[dict[str, Any]] = []

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """Record `body` and return the next scripted message (StopIteration when done)."""
        self.requests.append(body)
        content = next(self.turns)
        stop = "tool_use" if any(block["type"] == "tool_use" for block in content) else "end_turn"
        return {
            "id": f"msg_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-test"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=self.answer(json.loads(request.content)))

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key="sk-test", http_client=httpx2.Client(transport=httpx2.MockTransport(self))
        )

    def tool_results(self) -> list[dict[str, Any]]:
        """Every `tool_result` block the runner sent, in order (each once, though each request
        repeats the whole conversation)."""
        seen: dict[str, dict[str, Any]] = {}
        for body in self.requests:
            for message in body["messages"]:
                if message["role"] == "user" and isinstance(message["content"], list):
                    for block in message["content"]:
                        if block["type"] == "tool_result":
                            seen.setdefault(block["tool_use_id"], block)
        return list(seen.values())


def tool_use(id: str, name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def sse_events(message: dict[str, Any]) -> bytes:
    """`message` as the Messages API streams it: start, one start/delta/stop per block, end."""
    start = {**message, "content": [], "stop_reason": None}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opened = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            opened = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        events += [
            {"type": "content_block_start", "index": index, "content_block": opened},
            {"type": "content_block_delta", "index": index, "delta": delta},
            {"type": "content_block_stop", "index": index},
        ]
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events += [
        {"type": "message_delta", "delta": stop, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


@dataclass
class Loopback:
    url: str = ""
    strays: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve_on_loopback(model: ScriptedModel) -> Iterator[Loopback]:
    """Serve `model` as a Messages API on a free 127.0.0.1 port until the block ends."""
    lock = threading.Lock()
    loopback = Loopback()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, content_type: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.command != "POST" or self.path.split("?")[0] != "/v1/messages":
                loopback.strays.append(f"{self.command} {self.path}")
                self.reply(404, "application/json", json.dumps(NOT_FOUND).encode())
                return
            request = json.loads(body)
            with lock:
                try:
                    message = model.answer(request)
                except StopIteration:
                    self.reply(400, "application/json", json.dumps(SCRIPT_DONE).encode())
                    return
            if request.get("stream"):
                self.reply(200, "text/event-stream", sse_events(message))
            else:
                self.reply(200, "application/json", json.dumps(message).encode())

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_CONNECT = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    loopback.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="messages-api", daemon=True)
    thread.start()
    try:
        yield loopback
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
