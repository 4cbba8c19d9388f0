"""The edge's own answers: a short HTML page for a browser, problem JSON for anything else."""

from __future__ import annotations

import html
import json

from starlette.types import Send

Headers = list[tuple[bytes, bytes]]


class Refusal(Exception):
    """A request the edge answers itself (``status``), saying why and what to do."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail

    def body(self, accept: str) -> tuple[bytes, bytes]:
        """The page and its content type, HTML when the client asks for it."""
        if "text/html" in accept:
            page = (
                "<!doctype html><html><head><meta charset=utf-8>"
                f"<title>{self.status} {html.escape(self.title)}</title></head>"
                f"<body><h1>{html.escape(self.title)}</h1><p>{html.escape(self.detail)}</p>"
                "<p><small>isorun URL edge</small></p></body></html>"
            )
            return page.encode(), b"text/html; charset=utf-8"
        problem = {"status": self.status, "title": self.title, "detail": self.detail}
        return json.dumps(problem).encode(), b"application/problem+json"


async def send_refusal(send: Send, refusal: Refusal, accept: str, *, websocket: bool) -> None:
    """Answer with ``refusal``; a WebSocket handshake gets it as its HTTP denial response."""
    body, content_type = refusal.body(accept)
    prefix = "websocket.http.response" if websocket else "http.response"
    headers = [(b"content-type", content_type), (b"cache-control", b"no-store")]
    await send({"type": f"{prefix}.start", "status": refusal.status, "headers": headers})
    await send({"type": f"{prefix}.body", "body": body})


def bad_gateway(what: str) -> Refusal:
    return Refusal(502, "Bad gateway", f"The server in the sandbox did not answer: {what}.")
