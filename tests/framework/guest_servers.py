"""Servers that tests start inside a guest (python fixture image).

```
serve_folder(port, marker)  one shell line: /srv/site holding the file `marker`, served in the
                            background by `python3 -m http.server` on the guest's loopback;
                            it returns once the server answers (polled by one python in the
                            guest: an exec per try would cost a python start each)
ECHO_SERVER                 python source: TCP echo on 127.0.0.1:9000, half-closing back at EOF
```
"""

from __future__ import annotations

import shlex

ECHO_SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9000))
s.listen()
while True:
    c, _ = s.accept()
    while d := c.recv(65536):
        c.sendall(d)
    c.shutdown(socket.SHUT_WR)
    c.close()
"""

_WAIT = """
import time, urllib.request
for _ in range(600):
    try:
        urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=2)
        break
    except OSError:
        time.sleep(0.2)
else:
    raise SystemExit("the server on port {port} did not answer")
"""


def serve_folder(port: int, marker: str) -> str:
    return (
        f"mkdir -p /srv/site && echo hi > /srv/site/{marker} && cd /srv/site && "
        f"(nohup python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &) && "
        f"python3 -c {shlex.quote(_WAIT.format(port=port))}"
    )
