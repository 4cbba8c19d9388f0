"""One function per API route (spec/api.md "Routes"), each returning an `ApiRequest`.

No I/O here: `Sandbox` and `AsyncSandbox` build the same requests through these functions and
differ only in how they send them. Only GET, DELETE and the create call (which carries an
`Idempotency-Key`) are marked idempotent, so exec, file writes and the other POSTs are never
retried.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from urllib.parse import quote

import httpx

from isorun._base import (
    ApiRequest,
    RequestContent,
    SecretArg,
    exec_timeout,
    network_body,
    policy_body,
)

NDJSON = "application/x-ndjson"


def _sandbox_path(sandbox_id: str, rest: str = "") -> str:
    return f"/v1/sandboxes/{quote(sandbox_id, safe='')}{rest}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def health() -> ApiRequest:
    """`GET /v1/health`."""
    return ApiRequest("GET", "/v1/health", "health", idempotent=True)


def create_sandbox(
    *,
    image: str,
    vcpus: int,
    memory_mib: int,
    timeout_s: int,
    env: Mapping[str, str] | None,
    metadata: Mapping[str, str] | None,
    labels: Mapping[str, str] | None,
    allow: Sequence[str] | None,
    deny: Sequence[str] | None,
    profile: str | None = None,
    secrets: Sequence[SecretArg] | None = None,
    snapshot: str | None = None,
    auto_hibernate_s: int | None = None,
) -> ApiRequest:
    """`POST /v1/sandboxes` with a fresh `Idempotency-Key`, reused by this call's retries.

    `profile`, `allow`, `deny` and `secrets` go out as `"network"`, only when one is given (no
    `network`: no egress, or from a snapshot, its sandbox's). With `snapshot`, the snapshot
    fixes the image, vCPUs and memory, so those are not sent.

    Raises:
        UsageError: A secret dict with unknown or missing fields; `allow`/`deny` a string.
    """
    body: dict[str, object] = {
        "timeout_s": timeout_s,
        "env": dict(env or {}),
        "metadata": dict(metadata or {}),
        "labels": dict(labels or {}),
    }
    if snapshot is None:
        body.update(image=image, vcpus=vcpus, memory_mib=memory_mib)
    else:
        body["snapshot"] = snapshot
    if auto_hibernate_s is not None:
        body["auto_hibernate_s"] = auto_hibernate_s
    network = network_body(profile=profile, allow=allow, deny=deny, secrets=secrets)
    if network is not None:
        body["network"] = network
    return ApiRequest(
        "POST",
        "/v1/sandboxes",
        "create sandbox",
        idempotent=True,
        json=body,
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )


def list_sandboxes(
    *, state: str | None, labels: Mapping[str, str] | None, page_size: int
) -> ApiRequest:
    """`GET /v1/sandboxes?state=&label=k=v&limit=` (first page)."""
    params = [("limit", str(page_size))]
    if state is not None:
        params.append(("state", state))
    params += [("label", f"{key}={value}") for key, value in (labels or {}).items()]
    return ApiRequest(
        "GET", "/v1/sandboxes", "list sandboxes", idempotent=True, params=tuple(params)
    )


def get_sandbox(sandbox_id: str) -> ApiRequest:
    """`GET /v1/sandboxes/{id}`."""
    return ApiRequest(
        "GET", _sandbox_path(sandbox_id), "get sandbox", idempotent=True, sandbox_id=sandbox_id
    )


def delete_sandbox(sandbox_id: str) -> ApiRequest:
    """`DELETE /v1/sandboxes/{id}`."""
    return ApiRequest(
        "DELETE",
        _sandbox_path(sandbox_id),
        "delete sandbox",
        idempotent=True,
        sandbox_id=sandbox_id,
    )


def keep_alive(sandbox_id: str, timeout_s: int) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/keepalive` (not retried: each one moves the deadline)."""
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/keepalive"),
        "keep alive",
        idempotent=False,
        json={"timeout_s": timeout_s},
        sandbox_id=sandbox_id,
    )


def fork_sandbox(sandbox_id: str, count: int, timeout_s: int | None) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/fork` (not retried: each one makes clones)."""
    body: dict[str, object] = {"count": count}
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/fork"),
        "fork",
        idempotent=False,
        json=body,
        sandbox_id=sandbox_id,
    )


def hibernate_sandbox(sandbox_id: str) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/hibernate` (repeatable: a hibernated sandbox is answered as is)."""
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/hibernate"),
        "hibernate",
        idempotent=True,
        sandbox_id=sandbox_id,
    )


def resume_sandbox(sandbox_id: str) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/resume` (repeatable: a running sandbox is answered as is)."""
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/resume"),
        "resume",
        idempotent=True,
        sandbox_id=sandbox_id,
    )


def get_network(sandbox_id: str) -> ApiRequest:
    """`GET /v1/sandboxes/{id}/network`."""
    return ApiRequest(
        "GET",
        _sandbox_path(sandbox_id, "/network"),
        "get network",
        idempotent=True,
        sandbox_id=sandbox_id,
    )


def update_network(
    sandbox_id: str,
    *,
    profile: str | None,
    allow: Sequence[str] | None,
    deny: Sequence[str] | None,
) -> ApiRequest:
    """`PATCH /v1/sandboxes/{id}/network` with the fields given (repeatable: it sets values)."""
    body = policy_body(profile=profile, allow=allow, deny=deny)
    return ApiRequest(
        "PATCH",
        _sandbox_path(sandbox_id, "/network"),
        "update network",
        idempotent=True,
        json=body,
        sandbox_id=sandbox_id,
    )


def create_url(sandbox_id: str, port: int, *, expires_in_s: int, public: bool) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/urls` (repeatable: a URL is signed, not stored, so a repeat
    only signs another one as good)."""
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/urls"),
        "create url",
        idempotent=True,
        json={"port": port, "expires_in_s": expires_in_s, "public": public},
        sandbox_id=sandbox_id,
    )


def create_snapshot(sandbox_id: str, *, keep: bool, name: str | None) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/snapshots` (not retried: each one saves a snapshot)."""
    body: dict[str, object] = {"keep": keep}
    if name is not None:
        body["name"] = name
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/snapshots"),
        "snapshot",
        idempotent=False,
        json=body,
        sandbox_id=sandbox_id,
    )


def list_snapshots(*, sandbox_id: str | None, page_size: int) -> ApiRequest:
    """`GET /v1/snapshots?sandbox_id=&limit=` (first page)."""
    params = [("limit", str(page_size))]
    if sandbox_id is not None:
        params.append(("sandbox_id", sandbox_id))
    return ApiRequest(
        "GET", "/v1/snapshots", "list snapshots", idempotent=True, params=tuple(params)
    )


def list_audit(sandbox_id: str, *, page_size: int) -> ApiRequest:
    """`GET /v1/sandboxes/{id}/audit?limit=` (first page)."""
    return ApiRequest(
        "GET",
        _sandbox_path(sandbox_id, "/audit"),
        "list audit entries",
        idempotent=True,
        params=(("limit", str(page_size)),),
        sandbox_id=sandbox_id,
    )


def verify_audit() -> ApiRequest:
    """`GET /v1/audit/verify`."""
    return ApiRequest("GET", "/v1/audit/verify", "verify audit", idempotent=True)


def get_snapshot(snapshot_id: str) -> ApiRequest:
    """`GET /v1/snapshots/{id}`."""
    path = f"/v1/snapshots/{quote(snapshot_id, safe='')}"
    return ApiRequest("GET", path, "get snapshot", idempotent=True)


def delete_snapshot(snapshot_id: str) -> ApiRequest:
    """`DELETE /v1/snapshots/{id}`."""
    path = f"/v1/snapshots/{quote(snapshot_id, safe='')}"
    return ApiRequest("DELETE", path, "delete snapshot", idempotent=True)


def exec_command(
    sandbox_id: str,
    command: str | Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    user: str | None,
    timeout_s: float | None,
    stdin: str | None,
    stream: bool,
    client_timeout: httpx.Timeout,
) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/exec`, buffered or (with `stream`) NDJSON.

    A string command runs under `/bin/sh -c`; a sequence is the argv.
    """
    body = {
        "command": command if isinstance(command, str) else list(command),
        "env": dict(env or {}),
        "cwd": cwd,
        "user": user,
        "timeout_s": timeout_s or 0,
        "stdin": stdin,
    }
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/exec"),
        "exec",
        idempotent=False,
        json=body,
        headers={"Accept": NDJSON} if stream else {},
        timeout=exec_timeout(client_timeout, timeout_s),
        sandbox_id=sandbox_id,
    )


def list_processes(sandbox_id: str) -> ApiRequest:
    """`GET /v1/sandboxes/{id}/processes`."""
    return ApiRequest(
        "GET",
        _sandbox_path(sandbox_id, "/processes"),
        "list processes",
        idempotent=True,
        sandbox_id=sandbox_id,
    )


def signal_process(sandbox_id: str, pid: int, signal: int) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/processes/{pid}/signal`."""
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, f"/processes/{pid}/signal"),
        "signal",
        idempotent=False,
        json={"signal": int(signal)},
        sandbox_id=sandbox_id,
    )


def read_file(sandbox_id: str, path: str) -> ApiRequest:
    """`GET /v1/sandboxes/{id}/files/content?path=` (an octet stream)."""
    return _files("GET", sandbox_id, "/files/content", "read file", path=path)


def write_file(
    sandbox_id: str, path: str, content: RequestContent, *, mode: int, parents: bool
) -> ApiRequest:
    """`PUT /v1/sandboxes/{id}/files/content?path=&mode=&parents=` (raw body, streamed)."""
    return ApiRequest(
        "PUT",
        _sandbox_path(sandbox_id, "/files/content"),
        "write file",
        # A PUT of the same bytes would be safe to repeat, but a streamed body cannot be
        # replayed, so writes are never retried.
        idempotent=False,
        params=(("path", path), ("mode", str(mode)), ("parents", _bool(parents))),
        content=content,
        headers={"Content-Type": "application/octet-stream"},
        sandbox_id=sandbox_id,
    )


def list_files(sandbox_id: str, path: str) -> ApiRequest:
    """`GET /v1/sandboxes/{id}/files?path=`."""
    return _files("GET", sandbox_id, "/files", "list files", path=path)


def stat_file(sandbox_id: str, path: str) -> ApiRequest:
    """`GET /v1/sandboxes/{id}/files/stat?path=`."""
    return _files("GET", sandbox_id, "/files/stat", "stat", path=path)


def remove_file(sandbox_id: str, path: str, *, recursive: bool) -> ApiRequest:
    """`DELETE /v1/sandboxes/{id}/files?path=&recursive=`."""
    return _files("DELETE", sandbox_id, "/files", "remove", path=path, recursive=_bool(recursive))


def make_dir(sandbox_id: str, path: str, *, parents: bool) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/files/mkdir`."""
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/files/mkdir"),
        "mkdir",
        idempotent=False,
        json={"path": path, "parents": parents},
        sandbox_id=sandbox_id,
    )


def rename_file(sandbox_id: str, src: str, dst: str) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/files/rename`."""
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/files/rename"),
        "rename",
        idempotent=False,
        json={"src": src, "dst": dst},
        sandbox_id=sandbox_id,
    )


def _files(method: str, sandbox_id: str, rest: str, what: str, **params: str) -> ApiRequest:
    return ApiRequest(
        method,
        _sandbox_path(sandbox_id, rest),
        what,
        idempotent=True,
        params=tuple(params.items()),
        sandbox_id=sandbox_id,
    )


def create_shell(
    sandbox_id: str,
    command: str | Sequence[str] | None,
    *,
    cols: int,
    rows: int,
    env: Mapping[str, str] | None,
    cwd: str | None,
    user: str | None,
    scrollback_bytes: int,
) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/shells` (not retried: each one starts a shell).

    The API takes an argv or null (a login shell); a string is wrapped in `/bin/sh -c` here,
    as exec does with one.
    """
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    body = {
        "command": None if argv is None else list(argv),
        "env": dict(env or {}),
        "cwd": cwd,
        "user": user,
        "cols": cols,
        "rows": rows,
        "scrollback_bytes": scrollback_bytes,
    }
    return ApiRequest(
        "POST",
        _sandbox_path(sandbox_id, "/shells"),
        "open shell",
        idempotent=False,
        json=body,
        sandbox_id=sandbox_id,
    )


def list_shells(sandbox_id: str) -> ApiRequest:
    """`GET /v1/sandboxes/{id}/shells`."""
    return ApiRequest(
        "GET",
        _sandbox_path(sandbox_id, "/shells"),
        "list shells",
        idempotent=True,
        sandbox_id=sandbox_id,
    )


def resize_shell(sandbox_id: str, shell_id: str, cols: int, rows: int) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/shells/{shell_id}/resize` (repeatable: it sets a size)."""
    return ApiRequest(
        "POST",
        shell_path(sandbox_id, shell_id, "/resize"),
        "resize shell",
        idempotent=True,
        json={"cols": cols, "rows": rows},
        sandbox_id=sandbox_id,
    )


def signal_shell(sandbox_id: str, shell_id: str, signal: int, target: str) -> ApiRequest:
    """`POST /v1/sandboxes/{id}/shells/{shell_id}/signal`."""
    return ApiRequest(
        "POST",
        shell_path(sandbox_id, shell_id, "/signal"),
        "signal shell",
        idempotent=False,
        json={"signal": int(signal), "target": target},
        sandbox_id=sandbox_id,
    )


def close_shell(sandbox_id: str, shell_id: str) -> ApiRequest:
    """`DELETE /v1/sandboxes/{id}/shells/{shell_id}`."""
    return ApiRequest(
        "DELETE",
        shell_path(sandbox_id, shell_id),
        "close shell",
        idempotent=True,
        sandbox_id=sandbox_id,
    )


def shell_path(sandbox_id: str, shell_id: str, rest: str = "") -> str:
    """The path of a shell's routes; `/attach` is its WebSocket's (see `_terminal`)."""
    return _sandbox_path(sandbox_id, f"/shells/{quote(shell_id, safe='')}{rest}")
