"""A remote node: a hostd serving the node API (spec/node.md) over HTTP, with a node token.

Contents stream both ways (a file read is handed on chunk by chunk, a write's body is sent as
it arrives, exec events are parsed line by line, a shell's or a port's frames are taken from
its WebSocket as the caller reads them); nothing is held whole. The node's problem bodies (and
the close reasons of a refused shell attach or port connection) become the hostd errors they
stand for (see nodes.base); a request that cannot reach the node is NodeUnavailable, and a
stream that breaks midway is ChannelClosed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import httpx
from isorun_hostd.agent_channel import (
    AgentError,
    Channel,
    ChannelClosed,
    ExecEnd,
    FileStat,
    Output,
    ShellEnd,
    ShellEvent,
)
from isorun_hostd.agent_channel.protocol import (
    ProcessList,
    ShellInfo,
    ShellList,
    ShellOpened,
    ShellResized,
    ShellStart,
    ShellWriter,
)
from isorun_hostd.api.models import (
    STAT_HEADER,
    NodeAuditList,
    NodeAuditReport,
    NodeExecCreate,
    NodeFork,
    NodeInfo,
    NodeNetwork,
    NodeProblem,
    NodeRestore,
    NodeResume,
    NodeSandbox,
    NodeSandboxCreate,
    NodeSandboxList,
    NodeShellCreate,
    NodeShellResize,
    NodeShellSignal,
    NodeSnapshot,
    NodeSnapshotCreate,
    NodeWritten,
    request_json,
)
from isorun_hostd.api.shell_frames import (
    CLOSE_PROBLEM_BASE,
    ResizeFrame,
    SignalFrame,
    SignalTarget,
    parse_event,
)
from isorun_hostd.images import errors as image_errors
from isorun_hostd.net.apply import NetworkError
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec
from isorun_hostd.sandboxes import DuplicateSandbox, ExecOptions, NoRoom
from isorun_hostd.snapshots import SnapshotNotFound
from isorun_hostd.vm import VMError
from isorun_hostd.vm.errors import BootTimeout, SnapshotError, StateError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Close

from isorun_backend.nodes.base import Node, NodePort, NodeProcess, NodeShell, NodeUnavailable
from isorun_backend.services.errors import InternalError

API = "/node/v1"
# Creates pull and boot, and streams last as long as their process or file: no read timeout.
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
LONG = httpx.Timeout(None, connect=5.0)
_CHANNELS = {"stdout": Channel.STDOUT, "stderr": Channel.STDERR}
# A port connection's text frames (spec/node.md "Ports").
_CONNECTED = {"event": "connected"}
_EOF_EVENT = {"event": "eof"}
_EOF_OP = json.dumps({"op": "eof"})


class RemoteNode(Node):
    keeps_vms = True

    def __init__(self, name: str, url: str, token: str) -> None:
        self.name = name
        self._headers = {"Authorization": f"Bearer {token}"}
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/") + API,
            headers=self._headers,
            timeout=TIMEOUT,
            trust_env=False,
        )
        # http://node -> ws://node, https:// -> wss://
        self._ws_url = "ws" + url.rstrip("/").removeprefix("http") + API

    async def start(self) -> None:
        """Nothing to do: a node that is down now is found out, and retried, by reconciling."""

    async def aclose(self) -> None:
        await self._client.aclose()

    async def info(self) -> NodeInfo:
        return NodeInfo.model_validate(await self._json("GET", "/info"))

    async def create(
        self,
        sandbox_id: str,
        image_ref: str,
        *,
        vcpus: int,
        mem_mib: int,
        network: NetworkSpec | None = None,
    ) -> NodeSandbox:
        body = NodeSandboxCreate(
            id=sandbox_id, image_ref=image_ref, vcpus=vcpus, mem_mib=mem_mib, network=network
        )
        answer = await self._json("POST", "/sandboxes", json=request_json(body), timeout=LONG)
        return NodeSandbox.model_validate(answer)

    async def destroy(self, sandbox_id: str) -> None:
        response = await self._request("DELETE", f"/sandboxes/{sandbox_id}", timeout=LONG)
        if response.status_code not in (204, 404):
            raise self._error(response)

    async def sandboxes(self) -> list[NodeSandbox]:
        return NodeSandboxList.model_validate(await self._json("GET", "/sandboxes")).data

    async def exec(
        self,
        sandbox_id: str,
        command: list[str] | str,
        options: ExecOptions,
        stdin: bytes | None = None,
    ) -> NodeProcess:
        body = NodeExecCreate(
            command=command,
            env=options.get("env") or {},
            cwd=options.get("cwd"),
            user=options.get("user"),
            timeout_s=options.get("timeout_s", 0),
            stdin=base64.b64encode(stdin).decode() if stdin is not None else None,
        )
        response = await self._open(
            "POST", f"/sandboxes/{sandbox_id}/exec", json=body.model_dump(exclude_none=True)
        )
        lines = response.aiter_lines()
        try:
            start = json.loads(await anext(lines))
            if start.get("type") != "start":
                raise self._problem(NodeProblem.model_validate(start))
        except (httpx.HTTPError, StopAsyncIteration, ValueError) as exc:
            await response.aclose()
            raise ChannelClosed(f"node {self.name}: the exec stream broke: {exc!r}") from exc
        except BaseException:
            await response.aclose()
            raise
        return _RemoteProcess(self, response, lines, int(start["pid"]))

    async def processes(self, sandbox_id: str) -> ProcessList:
        return ProcessList.model_validate(
            await self._json("GET", f"/sandboxes/{sandbox_id}/processes"), strict=False
        )

    async def signal(self, sandbox_id: str, pid: int, signum: int) -> None:
        path = f"/sandboxes/{sandbox_id}/processes/{pid}/signal"
        await self._json("POST", path, json={"signal": signum})

    async def read_file(self, sandbox_id: str, path: str) -> tuple[FileStat, AsyncIterator[bytes]]:
        response = await self._open(
            "GET", f"/sandboxes/{sandbox_id}/files/content", params={"path": path}
        )
        try:
            stat = FileStat.model_validate_json(response.headers[STAT_HEADER])
        except BaseException:
            await response.aclose()
            raise
        return stat, self._body(response)

    async def _body(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise ChannelClosed(f"node {self.name}: the transfer broke: {exc!r}") from exc
        finally:
            await response.aclose()

    async def write_file(
        self,
        sandbox_id: str,
        path: str,
        content: AsyncIterable[bytes],
        *,
        mode: int,
        parents: bool,
    ) -> int:
        answer = await self._json(
            "PUT",
            f"/sandboxes/{sandbox_id}/files/content",
            params={"path": path, "mode": mode, "parents": parents},
            content=content,
            timeout=LONG,
        )
        return NodeWritten.model_validate(answer).bytes

    async def list_dir(self, sandbox_id: str, path: str) -> list[FileStat]:
        entries = await self._json("GET", f"/sandboxes/{sandbox_id}/files", params={"path": path})
        return [FileStat.model_validate(entry, strict=False) for entry in entries]

    async def stat(self, sandbox_id: str, path: str) -> FileStat:
        answer = await self._json(
            "GET", f"/sandboxes/{sandbox_id}/files/stat", params={"path": path}
        )
        return FileStat.model_validate(answer, strict=False)

    async def mkdir(self, sandbox_id: str, path: str, parents: bool) -> None:
        body = {"path": path, "parents": parents}
        await self._json("POST", f"/sandboxes/{sandbox_id}/files/mkdir", json=body)

    async def rename(self, sandbox_id: str, src: str, dst: str) -> None:
        body = {"src": src, "dst": dst}
        await self._json("POST", f"/sandboxes/{sandbox_id}/files/rename", json=body)

    async def remove(self, sandbox_id: str, path: str, recursive: bool) -> None:
        params = {"path": path, "recursive": recursive}
        await self._json("DELETE", f"/sandboxes/{sandbox_id}/files", params=params)

    async def open_shell(self, sandbox_id: str, request: NodeShellCreate) -> ShellOpened:
        body = request.model_dump(exclude_none=True)
        answer = await self._json("POST", f"/sandboxes/{sandbox_id}/shells", json=body)
        return ShellOpened.model_validate(answer, strict=False)

    async def shells(self, sandbox_id: str) -> list[ShellInfo]:
        answer = await self._json("GET", f"/sandboxes/{sandbox_id}/shells")
        return ShellList.model_validate(answer, strict=False).shells

    async def attach_shell(
        self, sandbox_id: str, shell_id: str, *, write: bool, scrollback: bool
    ) -> NodeShell:
        query = httpx.QueryParams(write=write, scrollback=scrollback)
        url = f"{self._ws_url}/sandboxes/{sandbox_id}/shells/{shell_id}/attach?{query}"
        socket, first = await self._open_socket(url)
        try:
            start = parse_event(first) if isinstance(first, str) else None
        except ValueError:
            start = None
        if not isinstance(start, ShellStart):
            await socket.close()
            raise ChannelClosed(f"node {self.name}: the shell's socket began with {first[:80]!r}")
        return _RemoteShell(self.name, socket, start)

    async def _open_socket(self, url: str) -> tuple[ClientConnection, str | bytes]:
        """A node WebSocket and its first message. Raises: what a refusal stands for."""
        try:
            socket = await connect(
                url, additional_headers=self._headers, open_timeout=TIMEOUT.connect, proxy=None
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise NodeUnavailable(self.name, f"unreachable: {exc!r}") from exc
        try:
            return socket, await socket.recv()
        except ConnectionClosed as exc:
            raise self._refusal(exc.rcvd) from exc
        except BaseException:
            await socket.close()
            raise

    def _refusal(self, close: Close | None) -> Exception:
        """The error for a node's socket closed before its first frame."""
        if close is None or not CLOSE_PROBLEM_BASE <= close.code < CLOSE_PROBLEM_BASE + 1000:
            return ChannelClosed(f"node {self.name}: the socket closed: {close}")
        if close.code == CLOSE_PROBLEM_BASE + 401:
            return NodeUnavailable(self.name, "refused this backend's node token")
        try:
            # The reason holds what fits of the NodeProblem: its code, agent_code (a port's: op
            # too) and detail.
            body = NodeProblem.model_validate({"error": "", **json.loads(close.reason)})
        except (ValueError, TypeError):
            return InternalError(f"node {self.name} refused the socket: {close}")
        return self._problem(body)

    async def connect_port(self, sandbox_id: str, port: int) -> NodePort:
        url = f"{self._ws_url}/sandboxes/{sandbox_id}/ports/{port}/connect"
        socket, first = await self._open_socket(url)
        try:
            connected = isinstance(first, str) and json.loads(first) == _CONNECTED
        except ValueError:
            connected = False
        if not connected:
            await socket.close()
            raise ChannelClosed(f"node {self.name}: the port's socket began with {first[:80]!r}")
        return _RemotePort(self.name, socket)

    async def resize_shell(self, sandbox_id: str, shell_id: str, cols: int, rows: int) -> None:
        body = NodeShellResize(cols=cols, rows=rows).model_dump()
        await self._json("POST", f"/sandboxes/{sandbox_id}/shells/{shell_id}/resize", json=body)

    async def signal_shell(
        self, sandbox_id: str, shell_id: str, signum: int, target: SignalTarget
    ) -> None:
        body = NodeShellSignal(signal=signum, target=target).model_dump()
        await self._json("POST", f"/sandboxes/{sandbox_id}/shells/{shell_id}/signal", json=body)

    async def close_shell(self, sandbox_id: str, shell_id: str) -> None:
        await self._json("DELETE", f"/sandboxes/{sandbox_id}/shells/{shell_id}", timeout=LONG)

    async def fork(self, sandbox_id: str, count: int) -> list[NodeSandbox]:
        body = NodeFork(count=count).model_dump()
        answer = await self._json("POST", f"/sandboxes/{sandbox_id}/fork", json=body, timeout=LONG)
        return NodeSandboxList.model_validate(answer).data

    async def snapshot(self, sandbox_id: str, snapshot_id: str) -> NodeSnapshot:
        body = NodeSnapshotCreate(id=snapshot_id).model_dump()
        path = f"/sandboxes/{sandbox_id}/snapshots"
        return NodeSnapshot.model_validate(await self._json("POST", path, json=body, timeout=LONG))

    async def delete_snapshot(self, snapshot_id: str) -> None:
        response = await self._request("DELETE", f"/snapshots/{snapshot_id}", timeout=LONG)
        if response.status_code not in (204, 404):
            raise self._error(response)

    async def restore(
        self, snapshot_id: str, sandbox_id: str, *, network: NetworkSpec | None = None
    ) -> NodeSandbox:
        body = request_json(NodeRestore(id=sandbox_id, network=network))
        path = f"/snapshots/{snapshot_id}/restore"
        return NodeSandbox.model_validate(await self._json("POST", path, json=body, timeout=LONG))

    async def hibernate(self, sandbox_id: str) -> NodeSnapshot:
        path = f"/sandboxes/{sandbox_id}/hibernate"
        return NodeSnapshot.model_validate(await self._json("POST", path, timeout=LONG))

    async def resume(self, sandbox_id: str, *, network: NetworkSpec | None = None) -> NodeSandbox:
        body = request_json(NodeResume(network=network))
        path = f"/sandboxes/{sandbox_id}/resume"
        answer = await self._json("POST", path, json=body, timeout=LONG)
        return NodeSandbox.model_validate(answer)

    async def forget_hibernation(self, sandbox_id: str) -> None:
        response = await self._request("DELETE", f"/hibernations/{sandbox_id}", timeout=LONG)
        if response.status_code not in (204, 404):
            raise self._error(response)

    async def network(self, sandbox_id: str) -> NodeNetwork:
        return NodeNetwork.model_validate(
            await self._json("GET", f"/sandboxes/{sandbox_id}/network")
        )

    async def set_policy(self, sandbox_id: str, policy: EgressPolicy) -> EgressPolicy:
        path = f"/sandboxes/{sandbox_id}/network/policy"
        answer = await self._json("PUT", path, json=policy.model_dump(mode="json"))
        return EgressPolicy.model_validate(answer)

    async def audit_entries(self, sandbox_id: str, *, after: int, limit: int) -> NodeAuditList:
        params = {"sandbox_id": sandbox_id, "after": after, "limit": limit}
        return NodeAuditList.model_validate(await self._json("GET", "/audit", params=params))

    async def audit_verify(self) -> NodeAuditReport:
        # A long chain takes a while to read through.
        answer = await self._json("GET", "/audit/verify", timeout=LONG)
        return NodeAuditReport.model_validate(answer)

    # -- transport ------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise NodeUnavailable(self.name, f"unreachable: {exc!r}") from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer (None for a 204). Raises the error a problem answer stands for."""
        response = await self._request(method, path, **kwargs)
        if not response.is_success:
            raise self._error(response)
        return response.json() if response.status_code != 204 else None

    async def _open(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A streamed 200 answer, whose body the caller reads and closes."""
        request = self._client.build_request(method, path, timeout=LONG, **kwargs)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise NodeUnavailable(self.name, f"unreachable: {exc!r}") from exc
        if response.status_code != 200:
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                raise NodeUnavailable(self.name, f"broke off: {exc!r}") from exc
            finally:
                await response.aclose()
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> Exception:
        try:
            body = NodeProblem.model_validate_json(response.content)
        except ValueError:
            return InternalError(f"node {self.name} answered {response.status_code}")
        if response.status_code == 401:
            return NodeUnavailable(self.name, "refused this backend's node token")
        return self._problem(body)

    def _problem(self, body: NodeProblem) -> Exception:
        """The hostd exception ``body`` stands for (see hostd's api/errors.py)."""
        build = _PROBLEMS.get(body.code)
        if build is None:
            return InternalError(f"node {self.name}: {body.code}: {body.detail}")
        return build(self.name, body)


class _RemoteProcess:
    def __init__(
        self, node: RemoteNode, response: httpx.Response, lines: AsyncIterator[str], pid: int
    ) -> None:
        self._node = node
        self._response = response
        self._lines = lines
        self.pid = pid
        self._end: ExecEnd | None = None

    async def output(self) -> AsyncIterator[Output]:
        if self._end is not None:
            return
        try:
            async for line in self._lines:
                event = json.loads(line)
                kind = event.get("type")
                if kind in _CHANNELS:
                    yield Output(_CHANNELS[kind], base64.b64decode(event["data"]))
                elif kind == "exit":
                    self._end = ExecEnd.model_validate(event, strict=False)
                    return
                else:
                    raise self._node._problem(NodeProblem.model_validate(event))
            raise ChannelClosed(f"node {self._node.name}: the exec stream ended early")
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise ChannelClosed(f"node {self._node.name}: the exec stream broke: {exc!r}") from exc
        finally:
            await self._response.aclose()

    async def wait(self) -> ExecEnd:
        async for _ in self.output():
            pass
        assert self._end is not None
        return self._end

    async def detach(self) -> None:
        # Closing the connection detaches the process on the node (its stream's reader left).
        await self._response.aclose()


class _RemoteShell:
    """A shell followed over the node's attach WebSocket, whose frames are the public ones."""

    def __init__(self, node: str, socket: ClientConnection, start: ShellStart) -> None:
        self._node = node
        self._socket = socket
        self.pid = start.pid
        self.cols, self.rows = start.cols, start.rows
        self.writer = start.writer
        self.end: ShellEnd | None = None

    async def events(self) -> AsyncIterator[bytes | ShellEvent]:
        try:
            while self.end is None:
                message = await self._socket.recv()
                if isinstance(message, bytes):
                    yield message
                    continue
                event = parse_event(message)
                if isinstance(event, ShellEnd):
                    self.end = event
                elif isinstance(event, ShellStart):
                    raise ValueError("a second start")
                else:
                    if isinstance(event, ShellWriter):
                        self.writer = event.writer
                    elif isinstance(event, ShellResized):
                        self.cols, self.rows = event.cols, event.rows
                    yield event
        except (ConnectionClosed, ValueError) as exc:
            raise ChannelClosed(f"node {self._node}: the shell's socket broke: {exc}") from exc

    async def write(self, data: bytes) -> None:
        await self._send(data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._send(ResizeFrame(type="resize", cols=cols, rows=rows).model_dump_json())

    async def signal(self, signum: int, target: SignalTarget) -> None:
        frame = SignalFrame(type="signal", signal=signum, target=target)
        await self._send(frame.model_dump_json())

    async def detach(self) -> None:
        # The node detaches its stream when the socket closes; the shell keeps running.
        await self._socket.close()

    async def _send(self, message: bytes | str) -> None:
        try:
            await self._socket.send(message)
        except ConnectionClosed as exc:
            raise ChannelClosed(f"node {self._node}: the shell's socket broke: {exc}") from exc


class _RemotePort:
    """A guest connection carried by the node's port WebSocket (spec/node.md "Ports")."""

    def __init__(self, node: str, socket: ClientConnection) -> None:
        self._node = node
        self._socket = socket
        self._eof = False

    async def read(self) -> bytes:
        try:
            while not self._eof:
                message = await self._socket.recv()
                if isinstance(message, bytes):
                    # An empty message would read as the end here; it carries nothing anyway.
                    if message:
                        return message
                elif json.loads(message) == _EOF_EVENT:
                    self._eof = True
                else:
                    raise ValueError(f"not an eof frame: {message[:80]!r}")
        except (ConnectionClosed, ValueError) as exc:
            raise ChannelClosed(f"node {self._node}: the port's socket broke: {exc}") from exc
        return b""

    async def write(self, data: bytes) -> None:
        await self._send(data)

    async def write_eof(self) -> None:
        await self._send(_EOF_OP)

    async def aclose(self) -> None:
        # The node drops the guest connection when the socket closes.
        await self._socket.close()

    async def _send(self, message: bytes | str) -> None:
        try:
            await self._socket.send(message)
        except ConnectionClosed as exc:
            raise ChannelClosed(f"node {self._node}: the port's socket broke: {exc}") from exc


def _channel_closed(node: str, body: NodeProblem) -> Exception:
    return ChannelClosed(f"node {node}: {body.detail}")


def _vm_error(_node: str, body: NodeProblem) -> Exception:
    return BootTimeout(body.detail) if body.error == "BootTimeout" else VMError(body.detail)


def _agent_error(_node: str, body: NodeProblem) -> Exception:
    return AgentError(body.op or "?", body.agent_code or "?", body.detail)


def _image_error(_node: str, body: NodeProblem) -> image_errors.ImageError:
    """The ImageError subclass the node named, carrying the node's message."""
    cls = getattr(image_errors, body.error, None)
    if not (isinstance(cls, type) and issubclass(cls, image_errors.ImageError)):
        cls = image_errors.ImageError
    # Built without its __init__, whose message pattern needs fields the wire does not carry.
    error = cls.__new__(cls)
    Exception.__init__(error, body.detail)
    error.reference = body.reference or ""
    return error


def _state_error(_node: str, body: NodeProblem) -> Exception:
    # Built without its __init__, whose fields the wire does not carry apart.
    error = StateError.__new__(StateError)
    Exception.__init__(error, body.detail)
    error.state, error.required = "?", "?"
    return error


_PROBLEMS: dict[str, Callable[[str, NodeProblem], Exception]] = {
    "snapshot_not_found": lambda _node, body: SnapshotNotFound(body.detail),
    "snapshot": lambda _node, body: SnapshotError(body.detail),
    "vm_state": _state_error,
    "image": _image_error,
    "agent": _agent_error,
    "channel": _channel_closed,
    "sandbox_not_found": _channel_closed,
    "vm": _vm_error,
    "no_room": lambda _node, body: NoRoom(body.detail),
    "sandbox_exists": lambda _node, body: DuplicateSandbox(body.detail),
    "network": lambda node, body: NetworkError(f"node {node}: {body.detail}"),
    # What reaches a node past the backend's own checks: a policy the node's profiles do not
    # know, or a network asked of a node without one.
    "invalid_request": lambda node, body: ValueError(f"node {node}: {body.detail}"),
}
