"""POST /node/v1/sandboxes/{id}/exec: start a process, then stream its events as NDJSON.

The lines are spec/api.md's streamed exec events (start, stdout/stderr, exit); a failure after
the start is a last ``{"type": "error", ...NodeProblem}`` line. A reader that goes away
detaches the process, which keeps running in the guest.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from isorun_hostd.agent_channel import Channel, ChannelError, Process
from isorun_hostd.api.deps import SandboxDep
from isorun_hostd.api.errors import problem
from isorun_hostd.api.models import NDJSON, NodeExecCreate
from isorun_hostd.sandboxes import ExecOptions

router = APIRouter(prefix="/sandboxes/{sandbox_id}", tags=["exec"])

_NAMES = {Channel.STDOUT: "stdout", Channel.STDERR: "stderr"}


@router.post("/exec", name="exec", response_class=StreamingResponse)
async def run_exec(body: NodeExecCreate, sandbox: SandboxDep) -> StreamingResponse:
    try:
        stdin = base64.b64decode(body.stdin, validate=True) if body.stdin is not None else None
    except binascii.Error as exc:
        raise ValueError("stdin: not base64") from exc
    options: ExecOptions = {"env": body.env, "timeout_s": body.timeout_s}
    if body.cwd:
        options["cwd"] = body.cwd
    if body.user:
        options["user"] = body.user
    if stdin is None:
        process = await sandbox.exec(body.command, **options)
    else:
        process = await sandbox.exec_with_input(body.command, stdin, **options)
    return StreamingResponse(_events(process), media_type=NDJSON)


async def _events(process: Process) -> AsyncIterator[bytes]:
    finished = False
    try:
        yield _line({"type": "start", "pid": process.pid})
        async for chunk in process.output():
            data = base64.b64encode(chunk.data).decode()
            yield _line({"type": _NAMES[chunk.channel], "data": data})
        end = await process.wait()
        finished = True
        yield _line({"type": "exit", **end.model_dump()})
    except ChannelError as exc:
        _, body = problem(exc)
        yield _line({"type": "error", **body.model_dump(exclude_none=True)})
    finally:
        if not finished:
            process.detach()


def _line(event: dict[str, object]) -> bytes:
    return json.dumps(event).encode() + b"\n"
