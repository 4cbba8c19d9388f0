"""A web server for the public URL tests, run inside the guest (python3, stdlib only).

    python3 web.py PORT

GET /            a page whose script fetches /data.json and writes the answer into the DOM
GET /data.json   {"answer": 42}
ANY /request     the request as the server saw it: method, target, headers, body length, sha256
GET /events      server-sent events: tick 1..5, 0.3 s apart, then the stream ends
GET /big?mib=N   N MiB of "x"
GET /ws          WebSocket echo (text and binary; ping answered; close echoed)
"""

import asyncio
import base64
import hashlib
import json
import struct
import sys
import urllib.parse

PAGE = b"""<!doctype html><html><head><title>guest page</title></head><body>
<p id="out">waiting</p>
<script>
fetch('/data.json').then(r => r.json()).then(d => {
  document.getElementById('out').textContent = 'rendered ' + d.answer;
});
</script></body></html>"""
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def read_body(reader, headers):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                return body
            body += await reader.readexactly(size)
            await reader.readline()
    return await reader.readexactly(int(headers.get("content-length", "0")))


def head(status, content_type, length=None, extra=()):
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def page(writer, request):
    writer.write(head("200 OK", "text/html", len(PAGE)) + PAGE)


async def data(writer, request):
    body = json.dumps({"answer": 42}).encode()
    writer.write(head("200 OK", "application/json", len(body)) + body)


async def echo_request(writer, request):
    method, target, headers, body = request
    seen = {
        "method": method,
        "target": target,
        "headers": headers,
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    answer = json.dumps(seen).encode()
    writer.write(head("200 OK", "application/json", len(answer)))
    if method != "HEAD":
        writer.write(answer)


async def events(writer, request):
    writer.write(head("200 OK", "text/event-stream", extra=["Cache-Control: no-cache"]))
    for n in range(1, 6):
        writer.write(f"data: tick {n}\n\n".encode())
        await writer.drain()
        await asyncio.sleep(0.3)


async def big(writer, request):
    query = urllib.parse.urlsplit(request[1]).query
    mib = int(urllib.parse.parse_qs(query)["mib"][0])
    writer.write(head("200 OK", "application/octet-stream", mib << 20))
    chunk = b"x" * (1 << 20)
    for _ in range(mib):
        writer.write(chunk)
        await writer.drain()


async def not_found(writer, request):
    writer.write(head("404 Not Found", "text/plain", 9) + b"not found")


ROUTES = {"/": page, "/data.json": data, "/request": echo_request, "/events": events, "/big": big}


async def handle(reader, writer):
    try:
        line = (await reader.readline()).decode().rstrip("\r\n")
        if not line:
            return
        method, target, _ = line.split(" ", 2)
        headers = []
        while raw := (await reader.readline()).decode().rstrip("\r\n"):
            name, _, value = raw.partition(":")
            headers.append([name.strip().lower(), value.strip()])
        path = urllib.parse.urlsplit(target).path
        if path == "/ws":
            await websocket(reader, writer, dict(headers))
            return
        body = await read_body(reader, dict(headers))
        await ROUTES.get(path, not_found)(writer, (method, target, headers, body))
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def websocket(reader, writer, headers):
    accept = base64.b64encode(
        hashlib.sha1(headers["sec-websocket-key"].encode() + WS_GUID).digest()
    )
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    await writer.drain()
    while True:
        first, second = await reader.readexactly(2)
        opcode, length = first & 0x0F, second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        mask = await reader.readexactly(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
        if opcode == 0x8:
            writer.write(frame(0x8, payload[:2]))
            await writer.drain()
            return
        if opcode == 0x9:
            writer.write(frame(0xA, payload))
        elif opcode in (0x1, 0x2):
            writer.write(frame(opcode, payload))
        await writer.drain()


def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        size = bytes([n])
    elif n < 1 << 16:
        size = bytes([126]) + struct.pack("!H", n)
    else:
        size = bytes([127]) + struct.pack("!Q", n)
    return bytes([0x80 | opcode]) + size + payload


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
