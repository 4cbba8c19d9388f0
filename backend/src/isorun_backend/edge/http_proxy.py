"""An HTTP request, whatever version it came in, forwarded to the guest as HTTP/1.1.

```
client ─ASGI─► request line + headers ─h11─► NodePort (one guest connection per request)
               body chunks ──────────────► (a task, so both directions stream at once)
client ◄────── response start, body chunks ◄─h11─ guest
```

Every send waits for the client to take the bytes and every write for the agent's credit, so a
large answer or upload moves through a bounded window instead of piling up in this process.
"""

from __future__ import annotations

import asyncio
import contextlib

import h11
from starlette.types import Message, Receive, Scope, Send

from isorun_backend.edge.pages import Headers, bad_gateway
from isorun_backend.nodes import NodePort

# Per-connection headers (RFC 9110 7.6.1) describe the hop, not the message; HTTP/2 and 3
# forbid them. The guest connection gets its own framing and Connection: close.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


async def forward(
    scope: Scope, receive: Receive, send: Send, port: NodePort, headers: Headers
) -> None:
    """Send the request to ``port`` and stream its answer back.

    Raises:
        Refusal: 502 when the guest closed or broke HTTP before the response began.
    """
    conn = h11.Connection(h11.CLIENT)
    first = await receive()
    framing: Headers = []
    if not any(name == b"content-length" for name, _ in headers) and (
        first.get("body") or first.get("more_body")
    ):
        framing.append((b"transfer-encoding", b"chunked"))
    target = scope["raw_path"] or scope["path"].encode()
    if scope["query_string"]:
        target += b"?" + scope["query_string"]
    request = h11.Request(
        method=scope["method"],
        target=target,
        headers=[*headers, *framing, (b"connection", b"close")],
    )
    await port.write(conn.send(request))
    downloading = asyncio.create_task(_download(conn, port, send))
    uploading = asyncio.create_task(_upload(conn, port, first, receive))
    try:
        await asyncio.wait({downloading, uploading}, return_when=asyncio.FIRST_COMPLETED)
        if uploading.done() and uploading.exception() is None:
            # The client went away: an endless answer (SSE) must not stream on to nobody.
            downloading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await downloading
            return
        await downloading
    finally:
        for task in (downloading, uploading):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await uploading


async def _upload(conn: h11.Connection, port: NodePort, first: Message, receive: Receive) -> None:
    """Send the request body, then wait for the client to go away (returns then)."""
    message = first
    while message["type"] == "http.request":
        if body := message.get("body", b""):
            await port.write(conn.send(h11.Data(data=body)))
        if not message.get("more_body", False):
            await port.write(conn.send(h11.EndOfMessage()))
            break
        message = await receive()
    while message["type"] != "http.disconnect":
        message = await receive()


async def _download(conn: h11.Connection, port: NodePort, send: Send) -> None:
    started = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if not started:
                raise bad_gateway(f"its answer is not valid HTTP/1.1 ({exc})") from exc
            return
        if event is h11.NEED_DATA:
            conn.receive_data(await port.read())
        elif isinstance(event, h11.Response):
            started = True
            headers = [(k, v) for k, v in event.headers if k not in HOP_BY_HOP]
            await send(
                {"type": "http.response.start", "status": event.status_code, "headers": headers}
            )
        elif isinstance(event, h11.Data):
            await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
        elif isinstance(event, h11.EndOfMessage):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        elif isinstance(event, h11.ConnectionClosed):
            if not started:
                raise bad_gateway("it closed the connection without an answer")
            return
