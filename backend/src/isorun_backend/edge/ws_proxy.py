"""A WebSocket, accepted from the client only once the guest server accepted it (wsproto).

```
client ─ASGI websocket.connect─► Upgrade request ─wsproto─► NodePort
       ◄─ accept (its subprotocol) ◄── 101 ──────────────── guest   (or its refusal, as is)
       ◄═ messages, pings, close ═════════════════════════► (two tasks, first end ends both)
```
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Receive, Scope, Send
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from isorun_backend.edge.pages import Headers, bad_gateway
from isorun_backend.nodes import NodePort

# wsproto writes these itself from the Request's fields.
_HANDSHAKE = frozenset(
    {
        b"host",
        b"connection",
        b"upgrade",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
    }
)
_ABNORMAL = 1011
# Codes that only report a close locally (RFC 6455 7.4.1); a close frame never carries them.
_NOT_SENDABLE = frozenset({1005, 1006, 1015})


async def forward(
    scope: Scope, receive: Receive, send: Send, port: NodePort, headers: Headers
) -> None:
    """Open the WebSocket to ``port`` and relay it until either side closes.

    Raises:
        Refusal: 502 when the guest closed or broke the handshake.
    """
    if (await receive())["type"] != "websocket.connect":
        return
    ws = WSConnection(ConnectionType.CLIENT)
    host = next(value for name, value in headers if name == b"host")
    target = scope["raw_path"] or scope["path"].encode()
    if scope["query_string"]:
        target += b"?" + scope["query_string"]
    request = Request(
        host=host.decode("latin-1"),
        target=target.decode("latin-1"),
        subprotocols=list(scope.get("subprotocols", [])),
        extra_headers=[(k, v) for k, v in headers if k not in _HANDSHAKE],
    )
    await port.write(ws.send(request))
    if await _handshake(ws, port, send):
        await _relay(ws, port, receive, send)


async def _handshake(ws: WSConnection, port: NodePort, send: Send) -> bool:
    """Whether the guest accepted; its refusal is passed on to the client as it came."""
    while True:
        data = await port.read()
        try:
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    accept = {"type": "websocket.accept", "subprotocol": event.subprotocol}
                    await send(accept)
                    return True
                if isinstance(event, RejectConnection):
                    headers = list(event.headers)
                    await send(
                        {
                            "type": "websocket.http.response.start",
                            "status": event.status_code,
                            "headers": headers,
                        }
                    )
                    if not event.has_body:
                        await send({"type": "websocket.http.response.body", "body": b""})
                        return False
                elif isinstance(event, RejectData):
                    await send(
                        {
                            "type": "websocket.http.response.body",
                            "body": bytes(event.data),
                            "more_body": not event.body_finished,
                        }
                    )
                    if event.body_finished:
                        return False
        except RemoteProtocolError as exc:
            raise bad_gateway(f"its WebSocket handshake is not valid ({exc})") from exc
        if not data:
            raise bad_gateway("it closed the connection during the WebSocket handshake")


async def _relay(ws: WSConnection, port: NodePort, receive: Receive, send: Send) -> None:
    inbound = asyncio.create_task(_from_client(ws, port, receive))
    outbound = asyncio.create_task(_from_guest(ws, port, send))
    try:
        await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (inbound, outbound):
            task.cancel()
        for task in (inbound, outbound):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _from_client(ws: WSConnection, port: NodePort, receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            with contextlib.suppress(LocalProtocolError):
                await port.write(ws.send(CloseConnection(code=message.get("code", 1000))))
            return
        data = message.get("bytes")
        await port.write(ws.send(Message(data=data if data is not None else message["text"])))


async def _from_guest(ws: WSConnection, port: NodePort, send: Send) -> None:
    # Fragments are joined: an ASGI message is a whole WebSocket message.
    text: list[str] = []
    binary: list[bytes] = []
    while data := await port.read():
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, TextMessage):
                    text.append(event.data)
                    if event.message_finished:
                        await send({"type": "websocket.send", "text": "".join(text)})
                        text.clear()
                elif isinstance(event, BytesMessage):
                    binary.append(bytes(event.data))
                    if event.message_finished:
                        await send({"type": "websocket.send", "bytes": b"".join(binary)})
                        binary.clear()
                elif isinstance(event, Ping):
                    await port.write(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    with contextlib.suppress(LocalProtocolError):
                        await port.write(ws.send(event.response()))
                    code = 1000 if event.code in _NOT_SENDABLE else event.code
                    await send({"type": "websocket.close", "code": code})
                    return
        except RemoteProtocolError:
            break
    await send({"type": "websocket.close", "code": _ABNORMAL})
