"""`FakeBackend`: an in-memory fake of the isorun API (spec/api.md), for tests without a server.

It is an httpx transport, so it plugs into every client and sandbox through `transport=`, sync
or async:

```python
from isorun import Sandbox
from isorun.testing import FakeBackend

fake = FakeBackend()
fake.script_exec("python -V", stdout="Python 3.12.0\\n")
with Sandbox("python", transport=fake, api_key=fake.api_key) as sb:
    assert sb.exec("python -V").stdout == "Python 3.12.0\\n"
    sb.files.write("/tmp/a.txt", "hi")
assert fake.exec_calls[0].command == "python -V"
```

What it does: sandboxes (create with idempotency keys, get, list with filters and cursors,
keep-alive, delete), fork (clones copy the files), snapshots (save, list, get, delete, create
from one, deleted with their sandbox unless kept), hibernate and resume (a call on a hibernated
sandbox resumes it), exec (buffered and NDJSON-streamed) answered from scripted results, the
process list of past execs, a filesystem per sandbox in a dict, an audit log of those calls
(its MACs are unkeyed digests; `break_audit` makes verify report a bad entry), and each
sandbox's network (kept as sent, `network_of(id)`; GET shows it without secret values, PATCH
changes it, forks and restores keep it; an unknown profile is refused as the API does), public
URLs (well-formed, with a token nothing checks), with the error codes the spec names. What it
does not: run anything (an unscripted command exits 127 saying so), serve the URLs it gives out,
enforce quotas, resources or the network policy, expire sandboxes, or keep file modes (stat
says 0o644).
`fail_next` makes the next request answer with an error, to test retries and error handling.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import posixpath
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

_SANDBOX_ROUTE = re.compile(r"/v1/sandboxes/(?P<id>[^/]+)(?P<rest>/.*)?")
_SIGNAL_ROUTE = re.compile(r"/processes/(?P<pid>\d+)/signal")
_SNAPSHOT_ROUTE = re.compile(r"/v1/snapshots/(?P<id>[^/]+)")
_AUDIT_ROUTE = re.compile(r"/v1/sandboxes/(?P<id>[^/]+)/audit")
# Calls that need a running sandbox and do not resume a hibernated one.
_SAVES = {"/fork", "/snapshots"}
# The API's built-in egress profiles (docs/network.md).
PROFILES = ("claude-code", "data-science", "locked-down", "openai", "unrestricted", "web-dev")
# Public URLs: the fake signs nothing and serves nothing, it only answers as the API would.
URL_DOMAIN = "isorun.localhost"
URL_MAX_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class ExecCall:
    """One exec the fake received, as sent."""

    sandbox_id: str
    command: str | list[str]
    env: dict[str, str]
    cwd: str | None
    user: str | None
    timeout_s: float
    stdin: str | None


@dataclass
class _Scripted:
    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool


@dataclass
class _FakeSandbox:
    info: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/", "/tmp"})
    processes: list[dict[str, Any]] = field(default_factory=list)
    # The create's `network` member as sent (secret values included); None: no egress.
    network: dict[str, Any] | None = None


class _Problem(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class FakeBackend(httpx.MockTransport):
    """An in-memory isorun API; pass it as `transport=` with `api_key=fake.api_key`.

    Args:
        api_key: The one key it accepts; any other (or none) is a 401.

    Attributes:
        exec_calls: Every exec received, in order.
        requests: Every request received, in order.
    """

    def __init__(self, *, api_key: str = "isr_fake") -> None:
        super().__init__(self._handle)
        self.api_key = api_key
        self.exec_calls: list[ExecCall] = []
        self.requests: list[httpx.Request] = []
        self._sandboxes: dict[str, _FakeSandbox] = {}
        # Snapshot id -> (its description, the sandbox's files and folders at the save).
        self._snapshots: dict[str, tuple[dict[str, Any], _FakeSandbox]] = {}
        self._idempotency: dict[str, str] = {}
        self._scripts: dict[str | tuple[str, ...], _Scripted] = {}
        self._failures: list[_Problem] = []
        self._pids = itertools.count(100)
        self._audit: list[dict[str, Any]] = []
        self._audit_finding: dict[str, Any] | None = None

    # --- test controls ---

    def script_exec(
        self,
        command: str | Sequence[str],
        *,
        stdout: str = "",
        stderr: str = "",
        exit_code: int | None = 0,
        timed_out: bool = False,
    ) -> None:
        """Make every exec of exactly `command` (a string, or an argv) answer this result."""
        key = command if isinstance(command, str) else tuple(command)
        self._scripts[key] = _Scripted(stdout, stderr, exit_code, timed_out)

    def fail_next(self, status: int = 503, code: str = "unavailable", detail: str = "") -> None:
        """Make the next request (whichever it is) answer this problem; calls queue up."""
        self._failures.append(_Problem(status, code, detail or f"injected {code}"))

    def break_audit(self, seq: int, reason: str = "altered") -> None:
        """Make `GET /v1/audit/verify` report entry `seq` as bad, for `reason`."""
        self._audit_finding = {"seq": seq, "reason": reason}

    @property
    def sandbox_ids(self) -> list[str]:
        """The ids of the sandboxes that exist (not deleted)."""
        return list(self._sandboxes)

    def network_of(self, sandbox_id: str) -> dict[str, Any] | None:
        """The sandbox's network as the fake holds it: the create's `network` member as sent
        (secret values included, which the API never returns), after any PATCH."""
        return copy.deepcopy(self._sandboxes[sandbox_id].network)

    @property
    def snapshot_ids(self) -> list[str]:
        """The ids of the snapshots that exist."""
        return list(self._snapshots)

    # --- dispatch ---

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        try:
            if request.url.path != "/v1/health":
                self._authenticate(request)
            if self._failures:
                raise self._failures.pop(0)
            return self._route(request)
        except _Problem as problem:
            body = {
                "type": f"https://isorun.dev/problems/{problem.code}",
                "title": problem.code,
                "status": problem.status,
                "detail": problem.detail,
                "code": problem.code,
                "request_id": "req-fake",
            }
            headers = {"Content-Type": "application/problem+json"}
            return httpx.Response(problem.status, json=body, headers=headers)

    def _authenticate(self, request: httpx.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise _Problem(401, "unauthorized", "missing or unknown API key")

    def _route(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        if path == "/v1/health":
            return httpx.Response(
                200, json={"status": "ok", "version": "fake", "accelerator": "tcg"}
            )
        if path == "/v1/sandboxes":
            return self._create(request) if method == "POST" else self._list(request)
        if path.startswith("/v1/snapshots"):
            return self._snapshot_route(request)
        if path == "/v1/audit/verify" or _AUDIT_ROUTE.fullmatch(path):
            return self._audit_route(request)
        match = _SANDBOX_ROUTE.fullmatch(path)
        if match is None:
            raise _Problem(404, "not_found", f"no route {method} {path}")
        sandbox = self._sandboxes.get(match["id"])
        if sandbox is None:
            raise _Problem(404, "sandbox_not_found", f"no sandbox {match['id']}")
        rest = match["rest"] or ""
        state = sandbox.info["state"]
        if rest in _SAVES and state != "running":
            raise _Problem(409, "sandbox_not_running", f"sandbox {match['id']} is {state}")
        if rest.startswith(("/exec", "/files", "/processes")) and state == "hibernated":
            self._set_hibernated(sandbox, hibernated=False)
        handler = self._sandbox_routes().get((method, rest))
        if handler is None and (signal := _SIGNAL_ROUTE.fullmatch(match["rest"] or "")):
            return self._signal(sandbox, int(signal["pid"]))
        if handler is None:
            raise _Problem(404, "not_found", f"no route {method} {path}")
        return handler(sandbox, request)

    def _sandbox_routes(
        self,
    ) -> dict[tuple[str, str], Callable[[_FakeSandbox, httpx.Request], httpx.Response]]:
        return {
            ("GET", ""): lambda sb, _: httpx.Response(200, json=sb.info),
            ("DELETE", ""): self._delete,
            ("POST", "/keepalive"): self._keep_alive,
            ("POST", "/fork"): self._fork,
            ("POST", "/snapshots"): self._snapshot,
            ("POST", "/hibernate"): self._hibernate,
            ("POST", "/resume"): self._resume,
            ("GET", "/network"): lambda sb, _: httpx.Response(200, json=_network_public(sb)),
            ("PATCH", "/network"): self._update_network,
            ("POST", "/urls"): self._url,
            ("POST", "/exec"): self._exec,
            ("GET", "/processes"): lambda sb, _: _page(sb.processes),
            ("GET", "/files/content"): self._read,
            ("PUT", "/files/content"): self._write,
            ("GET", "/files"): self._list_dir,
            ("GET", "/files/stat"): lambda sb, r: httpx.Response(200, json=_stat(sb, _path(r))),
            ("POST", "/files/mkdir"): self._mkdir,
            ("POST", "/files/rename"): self._rename,
            ("DELETE", "/files"): self._remove,
        }

    # --- sandboxes ---

    def _create(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("Idempotency-Key")
        if key in self._idempotency and self._idempotency[key] in self._sandboxes:
            return httpx.Response(201, json=self._sandboxes[self._idempotency[key]].info)
        body = json.loads(request.content)
        _check_profile(body.get("network"))
        if body.get("snapshot") is not None:
            return self._restore(body, key)
        now = datetime.now(UTC)
        timeout_s = body.get("timeout_s", 300)
        info = {
            "id": f"sb-{uuid.uuid4().hex[:12]}",
            "image": body.get("image", "python"),
            "image_ref": f"fake.registry/{body.get('image', 'python')}@sha256:{'0' * 64}",
            "state": "running",
            "vcpus": body.get("vcpus", 1),
            "memory_mib": body.get("memory_mib", 1024),
            "created_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=timeout_s)).isoformat(),
            "env": body.get("env", {}),
            "metadata": body.get("metadata", {}),
            "labels": body.get("labels", {}),
            "forked_from": None,
            "from_snapshot": None,
            "hibernated_at": None,
            "auto_hibernate_s": body.get("auto_hibernate_s"),
        }
        self._sandboxes[info["id"]] = _FakeSandbox(info, network=body.get("network"))
        if key:
            self._idempotency[key] = info["id"]
        self._record(info["id"], "sandbox.create", {"image": info["image"]})
        return httpx.Response(201, json=info)

    def _restore(self, body: dict[str, Any], key: str | None) -> httpx.Response:
        snapshot_id = body["snapshot"]
        if snapshot_id not in self._snapshots:
            raise _Problem(404, "snapshot_not_found", f"no snapshot {snapshot_id!r}")
        snap, saved = self._snapshots[snapshot_id]
        now = datetime.now(UTC)
        info = {
            **copy.deepcopy(saved.info),
            "id": f"sb-{uuid.uuid4().hex[:12]}",
            "state": "running",
            "created_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=body.get("timeout_s", 300))).isoformat(),
            "env": body.get("env", {}),
            "metadata": body.get("metadata", {}),
            "labels": body.get("labels", {}),
            "forked_from": None,
            "from_snapshot": snap["id"],
            "hibernated_at": None,
        }
        network = body.get("network") or copy.deepcopy(saved.network)
        sandbox = _FakeSandbox(info, dict(saved.files), set(saved.dirs), network=network)
        self._sandboxes[info["id"]] = sandbox
        if key:
            self._idempotency[key] = info["id"]
        self._record(info["id"], "sandbox.create", {"snapshot_id": snapshot_id})
        return httpx.Response(201, json=info)

    def _fork(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        count = body.get("count", 1)
        if not 1 <= count <= 16:
            raise _Problem(422, "invalid_request", "count: must be 1..16")
        clones = []
        for _ in range(count):
            info = {
                **copy.deepcopy(sandbox.info),
                "id": f"sb-{uuid.uuid4().hex[:12]}",
                "created_at": datetime.now(UTC).isoformat(),
                "forked_from": sandbox.info["id"],
            }
            self._sandboxes[info["id"]] = _FakeSandbox(
                info,
                dict(sandbox.files),
                set(sandbox.dirs),
                network=copy.deepcopy(sandbox.network),
            )
            self._record(info["id"], "sandbox.create", {"forked_from": sandbox.info["id"]})
            clones.append(info)
        self._record(sandbox.info["id"], "sandbox.fork", {"clone_ids": [c["id"] for c in clones]})
        return httpx.Response(201, json={"data": clones, "next_cursor": None})

    def _snapshot(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        info = sandbox.info
        snap = {
            "id": f"snap-{uuid.uuid4().hex[:12]}",
            "sandbox_id": info["id"],
            "name": body.get("name"),
            "keep": body.get("keep", False),
            "image": info["image"],
            "image_ref": info["image_ref"],
            "vcpus": info["vcpus"],
            "memory_mib": info["memory_mib"],
            "size_bytes": sum(len(data) for data in sandbox.files.values()),
            "created_at": datetime.now(UTC).isoformat(),
        }
        saved = _FakeSandbox(
            copy.deepcopy(info),
            dict(sandbox.files),
            set(sandbox.dirs),
            network=copy.deepcopy(sandbox.network),
        )
        self._snapshots[snap["id"]] = (snap, saved)
        self._record(info["id"], "sandbox.snapshot", {"snapshot_id": snap["id"]})
        return httpx.Response(201, json=snap)

    def _hibernate(self, sandbox: _FakeSandbox, _: httpx.Request) -> httpx.Response:
        if sandbox.info["state"] not in ("running", "hibernated"):
            raise _Problem(409, "sandbox_not_running", f"sandbox is {sandbox.info['state']}")
        self._set_hibernated(sandbox, hibernated=True)
        self._record(sandbox.info["id"], "sandbox.hibernate", {})
        return httpx.Response(200, json=sandbox.info)

    def _resume(self, sandbox: _FakeSandbox, _: httpx.Request) -> httpx.Response:
        self._set_hibernated(sandbox, hibernated=False)
        self._record(sandbox.info["id"], "sandbox.resume", {})
        return httpx.Response(200, json=sandbox.info)

    @staticmethod
    def _set_hibernated(sandbox: _FakeSandbox, *, hibernated: bool) -> None:
        sandbox.info["state"] = "hibernated" if hibernated else "running"
        if hibernated and sandbox.info.get("hibernated_at") is None:
            sandbox.info["hibernated_at"] = datetime.now(UTC).isoformat()
        if not hibernated:
            sandbox.info["hibernated_at"] = None

    def _snapshot_route(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        if path == "/v1/snapshots" and method == "GET":
            params = request.url.params
            found = [
                snap
                for snap, _ in reversed(self._snapshots.values())
                if params.get("sandbox_id") in (None, snap["sandbox_id"])
            ]
            return _page(found)
        match = _SNAPSHOT_ROUTE.fullmatch(path)
        if match is None or method not in ("GET", "DELETE"):
            raise _Problem(404, "not_found", f"no route {method} {path}")
        if match["id"] not in self._snapshots:
            raise _Problem(404, "snapshot_not_found", f"no snapshot {match['id']!r}")
        if method == "DELETE":
            del self._snapshots[match["id"]]
            return httpx.Response(204)
        return httpx.Response(200, json=self._snapshots[match["id"]][0])

    def _list(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        wanted = dict(label.split("=", 1) for label in params.get_list("label"))
        found = [
            sb.info
            for sb in self._sandboxes.values()
            if params.get("state") in (None, sb.info["state"])
            and all(sb.info["labels"].get(k) == v for k, v in wanted.items())
        ]
        start, limit = int(params.get("cursor", 0)), int(params.get("limit", 50))
        rest = found[start + limit :]
        cursor = str(start + limit) if rest else None
        return httpx.Response(
            200, json={"data": found[start : start + limit], "next_cursor": cursor}
        )

    def _delete(self, sandbox: _FakeSandbox, _: httpx.Request) -> httpx.Response:
        del self._sandboxes[sandbox.info["id"]]
        self._record(sandbox.info["id"], "sandbox.destroy", {})
        for snapshot_id, (snap, _saved) in list(self._snapshots.items()):
            if snap["sandbox_id"] == sandbox.info["id"] and not snap["keep"]:
                del self._snapshots[snapshot_id]
        return httpx.Response(204)

    def _keep_alive(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        timeout_s = json.loads(request.content)["timeout_s"]
        expires = datetime.now(UTC) + timedelta(seconds=timeout_s)
        sandbox.info["expires_at"] = expires.isoformat()
        return httpx.Response(200, json=sandbox.info)

    # --- network ---

    def _update_network(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        unknown = set(body) - {"profile", "allow", "deny"}
        if unknown:
            raise _Problem(422, "invalid_request", f"{sorted(unknown)}: extra inputs")
        if sandbox.info["state"] not in ("running", "hibernated"):
            raise _Problem(409, "sandbox_not_running", f"sandbox is {sandbox.info['state']}")
        _check_profile(body)
        sandbox.network = {**(sandbox.network or {}), **body}
        return httpx.Response(200, json=_network_public(sandbox))

    # --- urls ---

    def _url(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        port, expires_in_s = body.get("port"), body.get("expires_in_s", 3600)
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise _Problem(422, "invalid_request", "port: must be 1..65535")
        if not isinstance(expires_in_s, int) or not 1 <= expires_in_s <= URL_MAX_TTL_S:
            raise _Problem(422, "invalid_request", f"expires_in_s: must be 1..{URL_MAX_TTL_S}")
        token = f"fake-{uuid.uuid4().hex}"
        origin = f"https://{port}-{sandbox.info['id']}.{URL_DOMAIN}"
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in_s)
        return httpx.Response(
            201,
            json={
                "url": f"{origin}/?isorun_token={token}",
                "origin": origin,
                "token": token,
                "port": port,
                "public": body.get("public", True),
                "expires_at": expires_at.isoformat(),
            },
        )

    # --- audit ---

    def _record(self, sandbox_id: str, kind: str, fields: dict[str, Any]) -> None:
        body = {
            "seq": len(self._audit) + 1,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sandbox_id": sandbox_id,
            "kind": kind,
            "fields": fields,
            "prev_mac": self._audit[-1]["mac"] if self._audit else "0" * 64,
        }
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self._audit.append({**body, "mac": digest})

    def _audit_route(self, request: httpx.Request) -> httpx.Response:
        match = _AUDIT_ROUTE.fullmatch(request.url.path)
        if request.method != "GET":
            raise _Problem(404, "not_found", f"no route {request.method} {request.url.path}")
        if match is None:
            bad = self._audit_finding
            checked = bad["seq"] - 1 if bad else len(self._audit)
            node = {"node": "fake", "ok": bad is None, "checked": checked, "first_bad": bad}
            return httpx.Response(200, json={"ok": bad is None, "nodes": [node]})
        # Deleted sandboxes' entries are served too: the log outlives them.
        entries = [e for e in self._audit if e["sandbox_id"] == match["id"]]
        if not entries:
            raise _Problem(404, "sandbox_not_found", f"no sandbox {match['id']}")
        params = request.url.params
        after, limit = int(params.get("cursor", 0)), int(params.get("limit", 50))
        page = [e for e in entries if e["seq"] > after][:limit]
        more = page and page[-1]["seq"] < entries[-1]["seq"]
        cursor = str(page[-1]["seq"]) if more else None
        return httpx.Response(200, json={"data": page, "next_cursor": cursor})

    # --- processes ---

    def _exec(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        call = ExecCall(
            sandbox_id=sandbox.info["id"],
            command=body["command"],
            env=body.get("env") or {},
            cwd=body.get("cwd"),
            user=body.get("user"),
            timeout_s=body.get("timeout_s") or 0,
            stdin=body.get("stdin"),
        )
        self.exec_calls.append(call)
        key = call.command if isinstance(call.command, str) else tuple(call.command)
        script = self._scripts.get(key) or _Scripted(
            "", f"isorun.testing.FakeBackend: no result scripted for {call.command!r}\n", 127, False
        )
        pid = next(self._pids)
        argv = ["/bin/sh", "-c", call.command] if isinstance(call.command, str) else call.command
        sandbox.processes.append(
            {"pid": pid, "tag": None, "argv": argv, "running": False, "exit_code": script.exit_code}
        )
        end = {
            "exit_code": script.exit_code,
            "signal": None,
            "timed_out": script.timed_out,
            "duration_ms": 1,
        }
        self._record(call.sandbox_id, "exec.start", {"pid": pid, "command": call.command})
        self._record(call.sandbox_id, "exec.end", {"pid": pid, **end})
        if request.headers.get("Accept") == "application/x-ndjson":
            # One body of lines (not a sync iterator, which async clients cannot read).
            return httpx.Response(200, content=b"".join(_ndjson(pid, script, end)))
        buffered = {**end, "stdout": script.stdout, "stderr": script.stderr, "truncated": False}
        return httpx.Response(200, json=buffered)

    def _signal(self, sandbox: _FakeSandbox, pid: int) -> httpx.Response:
        if not any(p["pid"] == pid for p in sandbox.processes):
            raise _Problem(404, "not_found", f"no process {pid}")
        return httpx.Response(204)

    # --- files ---

    def _read(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        path = _path(request)
        if path in sandbox.dirs:
            raise _Problem(400, "file_error", f"EISDIR: {path}")
        if path not in sandbox.files:
            raise _Problem(404, "not_found", f"no file {path}")
        return httpx.Response(200, content=sandbox.files[path])

    def _write(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        path = _path(request)
        if path in sandbox.dirs:
            raise _Problem(400, "file_error", f"EISDIR: {path}")
        _ensure_parent(sandbox, path, parents=request.url.params.get("parents") == "true")
        sandbox.files[path] = request.content
        return httpx.Response(200, json={"path": path, "bytes": len(request.content)})

    def _list_dir(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        path = _path(request)
        if path not in sandbox.dirs:
            raise _Problem(404, "not_found", f"no directory {path}")
        children = sorted(p for p in {*sandbox.files, *sandbox.dirs} if _parent(p) == path != p)
        return _page([_stat(sandbox, child) for child in children])

    def _mkdir(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        path, parents = _normalise(body["path"]), bool(body.get("parents", True))
        if path in sandbox.files or (path in sandbox.dirs and not parents):
            raise _Problem(400, "file_error", f"EEXIST: {path}")
        _ensure_parent(sandbox, path, parents=parents)
        sandbox.dirs.add(path)
        return httpx.Response(204)

    def _rename(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        src, dst = _normalise(body["src"]), _normalise(body["dst"])
        if src not in sandbox.files and src not in sandbox.dirs:
            raise _Problem(404, "not_found", f"no such path {src}")
        _ensure_parent(sandbox, dst, parents=False)
        sandbox.files = {_moved(p, src, dst): data for p, data in sandbox.files.items()}
        sandbox.dirs = {_moved(p, src, dst) for p in sandbox.dirs}
        return httpx.Response(204)

    def _remove(self, sandbox: _FakeSandbox, request: httpx.Request) -> httpx.Response:
        path = _path(request)
        inside = [p for p in {*sandbox.files, *sandbox.dirs} if p.startswith(path + "/")]
        if path not in sandbox.files and path not in sandbox.dirs:
            raise _Problem(404, "not_found", f"no such path {path}")
        if inside and request.url.params.get("recursive") != "true":
            raise _Problem(400, "file_error", f"ENOTEMPTY: {path}")
        for p in [path, *inside]:
            sandbox.files.pop(p, None)
            sandbox.dirs.discard(p)
        return httpx.Response(204)


def _check_profile(network: dict[str, Any] | None) -> None:
    profile = (network or {}).get("profile", "locked-down")
    if profile not in PROFILES:
        raise _Problem(
            400,
            "invalid_request",
            f"network: unknown egress profile {profile!r}; known profiles: {', '.join(PROFILES)}",
        )


def _network_public(sandbox: _FakeSandbox) -> dict[str, Any]:
    """GET /network's answer: the secrets without their values, no drops counted."""
    network = sandbox.network or {}
    return {
        "profile": network.get("profile", "locked-down"),
        "allow": network.get("allow", []),
        "deny": network.get("deny", []),
        "secrets": [
            {
                "name": secret["name"],
                "upstream": secret["upstream"],
                "header_name": secret.get("header", "Authorization: Bearer {value}").split(":")[0],
                "base_url_env": secret.get("base_url_env"),
            }
            for secret in network.get("secrets", [])
        ],
        "drops": {"dropped": 0, "spoofed": 0} if sandbox.info["state"] == "running" else None,
    }


def _page(items: list[dict[str, Any]]) -> httpx.Response:
    return httpx.Response(200, json={"data": items, "next_cursor": None})


def _ndjson(pid: int, script: _Scripted, end: dict[str, Any]) -> Iterator[bytes]:
    yield json.dumps({"type": "start", "pid": pid}).encode() + b"\n"
    for stream, text in (("stdout", script.stdout), ("stderr", script.stderr)):
        if text:
            data = base64.b64encode(text.encode()).decode()
            yield json.dumps({"type": stream, "data": data}).encode() + b"\n"
    yield json.dumps({"type": "exit", **end}).encode() + b"\n"


def _normalise(path: str) -> str:
    if not path.startswith("/"):
        raise _Problem(400, "invalid_request", f"path must be absolute: {path!r}")
    return posixpath.normpath(path).replace("//", "/")


def _path(request: httpx.Request) -> str:
    return _normalise(request.url.params.get("path", ""))


def _parent(path: str) -> str:
    return posixpath.dirname(path)


def _moved(path: str, src: str, dst: str) -> str:
    if path == src:
        return dst
    return dst + path[len(src) :] if path.startswith(src + "/") else path


def _ensure_parent(sandbox: _FakeSandbox, path: str, *, parents: bool) -> None:
    parent = _parent(path)
    if parent in sandbox.files:
        raise _Problem(400, "file_error", f"ENOTDIR: {parent}")
    if parent in sandbox.dirs:
        return
    if not parents:
        raise _Problem(404, "not_found", f"no directory {parent}")
    _ensure_parent(sandbox, parent, parents=True)
    sandbox.dirs.add(parent)


def _stat(sandbox: _FakeSandbox, path: str) -> dict[str, Any]:
    if path in sandbox.dirs:
        kind, size, mode = "dir", 4096, 0o755
    elif path in sandbox.files:
        kind, size, mode = "file", len(sandbox.files[path]), 0o644
    else:
        raise _Problem(404, "not_found", f"no such path {path}")
    return {
        "name": posixpath.basename(path) or "/",
        "path": path,
        "type": kind,
        "size": size,
        "mode": mode,
        "uid": 0,
        "gid": 0,
        "mtime_ms": 0,
        "link_target": None,
    }
