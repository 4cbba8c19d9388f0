"""The servers of the fake internet, run inside its namespace by ``fake_internet``:

    python -m tests.framework.fake_internet_server CONFIG.json

CONFIG: {"dns": "203.0.113.53", "hosts": {"pypi.org": "203.0.113.10", ...},
         "certs": {"pypi.org": ["cert.pem", "key.pem"], ...}, "log": "requests.jsonl"}

* DNS on dns:53 (UDP and TCP): A records for ``hosts`` (TTL 30), NXDOMAIN for any other name.
* HTTP on :80 and HTTPS on :443 of every host address, each with its own certificate. Every
  request is appended to ``log`` (host, method, path, headers) before it is answered:
  ``/v1/models``: a JSON model list; ``/simple/<project>/`` and ``/packages/<wheel>``: a
  one-package index whose wheel installs a module named after the project; ``/sse``: three
  events 0.3 s apart; anything else: ``hello from <host>``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import socketserver
import ssl
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rrset

WHEEL_VERSION = "1.0.0"
DNS_TTL_S = 30


def wheel(project: str) -> tuple[str, bytes]:
    """A minimal valid wheel for ``project``: its name and bytes."""
    module = project.replace("-", "_")
    name = f"{module}-{WHEEL_VERSION}-py3-none-any.whl"
    dist = f"{module}-{WHEEL_VERSION}.dist-info"
    files = {
        f"{module}/__init__.py": f'FROM = "fake-internet"\n__version__ = "{WHEEL_VERSION}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {WHEEL_VERSION}\n",
        f"{dist}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: fake\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in files.items():
            data = text.encode()
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{dist}/RECORD,,")
        archive.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return name, buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path: Path
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer()

    def _answer(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0]
        entry = {
            "host": host,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "tls": isinstance(self.connection, ssl.SSLSocket),
        }
        with self.lock, self.log_path.open("a") as log:
            log.write(json.dumps(entry) + "\n")
        path = self.path.split("?")[0]
        if path == "/sse":
            self._sse()
            return
        if path == "/v1/models":
            self._send(200, "application/json", json.dumps({"data": [{"id": "fake-model"}]}))
        elif path.startswith("/simple/"):
            project = path.strip("/").split("/")[1]
            name, data = wheel(project)
            digest = hashlib.sha256(data).hexdigest()
            link = f'<a href="/packages/{name}#sha256={digest}">{name}</a>'
            self._send(200, "text/html", f"<!DOCTYPE html><html><body>{link}</body></html>")
        elif path.startswith("/packages/"):
            project = path.rsplit("/", 1)[1].split("-")[0]
            self._send(200, "application/octet-stream", wheel(project)[1])
        else:
            self._send(200, "text/plain", f"hello from {host}\n")

    def _send(self, status: int, content_type: str, body: str | bytes) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for n in range(3):
            self.wfile.write(f"data: event {n} at {time.time():.3f}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.3)
        self.close_connection = True


def serve_http(address: str, port: int, context: ssl.SSLContext | None) -> None:
    server = ThreadingHTTPServer((address, port), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def dns_answer(query: bytes, hosts: dict[str, str]) -> bytes | None:
    try:
        request = dns.message.from_wire(query)
    except Exception:
        return None
    response = dns.message.make_response(request)
    for question in request.question:
        name = question.name.to_text().rstrip(".").lower()
        if name not in hosts:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text(question.name, DNS_TTL_S, "IN", "A", hosts[name])
            )
    return response.to_wire()


def serve_dns(address: str, hosts: dict[str, str]) -> None:
    class TCPHandler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            length = int.from_bytes(self.request.recv(2), "big")
            answer = dns_answer(self.request.recv(length), hosts)
            if answer is not None:
                self.request.sendall(len(answer).to_bytes(2, "big") + answer)

    tcp = socketserver.ThreadingTCPServer((address, 53), TCPHandler)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, 53))

    def loop() -> None:
        while True:
            query, peer = udp.recvfrom(4096)
            answer = dns_answer(query, hosts)
            if answer is not None:
                udp.sendto(answer, peer)

    threading.Thread(target=loop, daemon=True).start()


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    Handler.log_path = Path(config["log"])
    serve_dns(config["dns"], config["hosts"])
    for host, address in config["hosts"].items():
        cert, key = config["certs"][host]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        serve_http(address, 80, None)
        serve_http(address, 443, context)
    print("ready", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
