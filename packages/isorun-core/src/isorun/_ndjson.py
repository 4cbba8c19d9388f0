"""The streamed exec answer (spec/api.md "Exec", `Accept: application/x-ndjson`), without I/O.

```
{"type": "start", "pid": 7}                         -> StartEvent(pid=7)
{"type": "stdout"|"stderr", "data": "<base64>"}     -> OutputEvent(stream, data=bytes)   (0..n)
{"type": "exit", "exit_code", "signal", ...}        -> ExitEvent(...)
{"type": "error", ...problem}                       -> raises the problem's APIError
```

`ExecStreamDecoder` turns the body's byte chunks, cut anywhere (inside a line, inside a UTF-8
sequence), into events; `ExecCollector` turns events into callbacks and an `ExecResult`. The
sync and async drivers in `Sandbox` / `AsyncSandbox` only move chunks from the response into
these. Unknown event types are skipped, so the server may add some (keep-alives) later.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from collections.abc import Callable, Iterator

from pydantic import ValidationError

from isorun._base import error_from_problem
from isorun._errors import ProtocolError
from isorun._models import ExecEvent, ExecResult, ExitEvent, OutputEvent, StartEvent

OutputCallback = Callable[[str], object]
"""Called with each decoded piece of output text, as it arrives."""


class ExecStreamDecoder:
    """NDJSON bytes in, exec events out.

    Invariant: `_buffer` holds the bytes after the last newline seen, never a whole line.
    """

    def __init__(self, *, sandbox_id: str | None) -> None:
        self._sandbox_id = sandbox_id
        self._buffer = b""
        self._exited = False

    def feed(self, chunk: bytes) -> Iterator[ExecEvent]:
        """Yield the events completed by `chunk`.

        Raises:
            APIError: The server reported a failure after the start (an `error` line); the
                events before it have been yielded.
            ProtocolError: A line is not a valid event, or a line came after the exit.
        """
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        for line in lines:
            yield from self._parse(line)

    def close(self) -> Iterator[ExecEvent]:
        """Yield the event of an unterminated last line and check the stream was complete.

        Raises:
            ProtocolError: The stream ended before its exit event, or its last line is invalid.
            APIError: The last line was an `error` line.
        """
        line, self._buffer = self._buffer, b""
        yield from self._parse(line)
        if not self._exited:
            raise ProtocolError(
                "the exec stream ended before its exit event", sandbox_id=self._sandbox_id
            )

    def _parse(self, line: bytes) -> Iterator[ExecEvent]:
        if not line.strip():
            return
        if self._exited:
            raise ProtocolError(
                "exec stream: a line after the exit event", sandbox_id=self._sandbox_id
            )
        try:
            obj = json.loads(line)
            kind = obj["type"]
            if kind == "start":
                yield StartEvent(pid=obj["pid"])
            elif kind in ("stdout", "stderr"):
                yield OutputEvent(stream=kind, data=base64.b64decode(obj["data"], validate=True))
            elif kind == "exit":
                self._exited = True
                yield ExitEvent.model_validate(obj)
            elif kind == "error":
                raise error_from_problem(obj, status_code=500, sandbox_id=self._sandbox_id)
        except (ValueError, KeyError, TypeError, binascii.Error, ValidationError) as exc:
            raise ProtocolError(
                f"exec stream: bad line {line[:200]!r}: {exc}", sandbox_id=self._sandbox_id
            ) from exc


class ExecCollector:
    """Exec events in; text to the callbacks as it arrives, and the final `ExecResult`.

    Each stream has its own incremental UTF-8 decoder, so a character cut between two chunks
    reaches the callback whole. The text is also kept for the result (all of it: callers who
    need bounded memory iterate `exec_stream` instead).
    """

    def __init__(
        self,
        *,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        sandbox_id: str | None,
    ) -> None:
        self._callbacks = {"stdout": on_stdout, "stderr": on_stderr}
        self._decoders = {
            s: codecs.getincrementaldecoder("utf-8")("replace") for s in self._callbacks
        }
        self._text: dict[str, list[str]] = {s: [] for s in self._callbacks}
        self._exit: ExitEvent | None = None
        self._sandbox_id = sandbox_id

    def add(self, event: ExecEvent) -> None:
        """Take one event (in stream order)."""
        if isinstance(event, OutputEvent):
            self._emit(event.stream, self._decoders[event.stream].decode(event.data))
        elif isinstance(event, ExitEvent):
            for stream, decoder in self._decoders.items():
                self._emit(stream, decoder.decode(b"", final=True))
            self._exit = event

    def result(self) -> ExecResult:
        """The result, once the exit event has been added.

        Raises:
            ProtocolError: No exit event was seen.
        """
        if self._exit is None:
            raise ProtocolError(
                "the exec stream ended before its exit event", sandbox_id=self._sandbox_id
            )
        result = ExecResult(
            exit_code=self._exit.exit_code,
            signal=self._exit.signal,
            timed_out=self._exit.timed_out,
            duration_ms=self._exit.duration_ms,
            stdout="".join(self._text["stdout"]),
            stderr="".join(self._text["stderr"]),
        )
        result._sandbox_id = self._sandbox_id
        return result

    def _emit(self, stream: str, text: str) -> None:
        if not text:
            return
        self._text[stream].append(text)
        callback = self._callbacks[stream]
        if callback is not None:
            callback(text)
