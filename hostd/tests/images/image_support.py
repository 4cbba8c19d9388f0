"""What the image tests share besides fixtures: a recording transport and tree listings."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import httpx

TreeEntry = tuple[str, int, int, int, str]


class RecordingTransport(httpx.AsyncBaseTransport):
    """Forwards to a real transport and records every request it is asked to send.

    Requests to `unreachable_hosts` are recorded and fail with ConnectError without any
    socket being opened, so a test can let the client try a TEST-NET address safely.
    """

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []
        self.unreachable_hosts: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host in self.unreachable_hosts:
            raise httpx.ConnectError("unreachable (test transport)", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def paths(self, part: str) -> list[str]:
        return [request.url.path for request in self.requests if part in request.url.path]


def leftovers(cache_root: Path, scratch: Path) -> list[str]:
    """Anything a failed pull could have left: temp files, unpack dirs, disks."""
    found = [str(path) for path in (cache_root / "tmp").iterdir()]
    found += [str(path) for path in scratch.iterdir()]
    found += [str(path) for path in (cache_root / "disks").iterdir()]
    return found


def tree(root: Path) -> dict[str, TreeEntry]:
    """path -> (kind, mode, uid, gid, content sha256 or link target) for a whole tree."""
    entries: dict[str, TreeEntry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                detail, kind = os.readlink(path), "l"
            elif stat.S_ISREG(st.st_mode):
                detail, kind = hashlib.sha256(path.read_bytes()).hexdigest(), "f"
            else:
                detail, kind = "", "d" if stat.S_ISDIR(st.st_mode) else "?"
            entries[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail)
    return entries
