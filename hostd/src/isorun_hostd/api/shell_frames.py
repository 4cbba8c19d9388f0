"""The frames of a shell attach WebSocket (spec/api.md "Shells"), the same on the node API and
the public API, so that each side turns them into the agent's models and back in one place.

```
server → client   text {"type": "start" | "skipped" | "writer" | "resize" | "exit", ...},
                  binary: terminal output
client → server   text {"type": "resize", "cols", "rows"} | {"type": "signal", "signal",
                  "target"?}, binary: input as typed
close             4000 + the problem's status before "start" (reason: close_reason),
                  1000 after "exit", 1011 when the node or the sandbox broke
```
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from isorun_hostd.agent_channel.protocol import (
    MAX_TERMINAL_SIDE,
    ShellEnd,
    ShellResized,
    ShellSkipped,
    ShellStart,
    ShellWriter,
)
from isorun_hostd.agent_channel.shells import ShellEvent

CLOSE_NORMAL = 1000
CLOSE_INVALID_DATA = 1007
CLOSE_BROKEN = 1011
CLOSE_PROBLEM_BASE = 4000
# RFC 6455 5.5: a control frame's payload is 125 bytes, two of them the close code.
MAX_CLOSE_REASON_BYTES = 123

TerminalSide = Annotated[int, Field(ge=1, le=MAX_TERMINAL_SIDE)]
SignalTarget = Literal["foreground", "shell"]


class _Control(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResizeFrame(_Control):
    type: Literal["resize"]
    cols: TerminalSide
    rows: TerminalSide


class SignalFrame(_Control):
    type: Literal["signal"]
    signal: int = Field(gt=0, lt=128)
    target: SignalTarget = "foreground"


ControlFrame = ResizeFrame | SignalFrame
_CONTROL: TypeAdapter[ControlFrame] = TypeAdapter(
    Annotated[ControlFrame, Field(discriminator="type")]
)


def parse_control(text: str) -> ControlFrame:
    """A client's text frame. Raises: pydantic.ValidationError (a ValueError)."""
    return _CONTROL.validate_json(text)


def start_frame(*, pid: int, cols: int, rows: int, writer: bool) -> str:
    return json.dumps({"type": "start", "pid": pid, "cols": cols, "rows": rows, "writer": writer})


# The agent's models name their kind ``event``; the frames name it ``type``.
_EVENT_MODELS: dict[str, type[ShellStart | ShellSkipped | ShellWriter | ShellResized]] = {
    "start": ShellStart,
    "skipped": ShellSkipped,
    "writer": ShellWriter,
    "resize": ShellResized,
}


def event_frame(event: ShellEvent | ShellEnd) -> str:
    if isinstance(event, ShellEnd):
        return json.dumps({"type": "exit", **event.model_dump()})
    fields = event.model_dump()
    return json.dumps({"type": fields.pop("event"), **fields})


def parse_event(text: str) -> ShellStart | ShellEvent | ShellEnd:
    """A server's text frame, as the agent's model it was made from.

    Raises: ValueError (pydantic.ValidationError, json.JSONDecodeError, an unknown type).
    """
    fields = json.loads(text)
    kind = fields.pop("type", None) if isinstance(fields, dict) else None
    if kind == "exit":
        return ShellEnd.model_validate(fields)
    if kind not in _EVENT_MODELS:
        raise ValueError(f"not a shell event: {text[:80]!r}")
    return _EVENT_MODELS[kind].model_validate({"event": kind, **fields})


def close_reason(detail: str, **fields: str | None) -> str:
    """A JSON close reason with ``fields`` and as much of ``detail`` as fits in 123 bytes."""
    kept = {name: value for name, value in fields.items() if value is not None}
    reason = json.dumps({**kept, "detail": detail})
    while len(reason.encode()) > MAX_CLOSE_REASON_BYTES and detail:
        detail = detail[: max(0, len(detail) - (len(reason.encode()) - MAX_CLOSE_REASON_BYTES))]
        reason = json.dumps({**kept, "detail": detail})
    return reason


def cut_reason(detail: str) -> str:
    """``detail`` cut to the bytes a close reason holds, on a character boundary."""
    return detail.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")
