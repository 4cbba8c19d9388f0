"""`PtyProcesses`: an `IsorunSandboxSession`'s PTY sessions, by the session id the model sees.

The session reports `supports_pty()` True, so the SDK's shell tool offers `write_stdin` and runs
every `exec_command` through `pty_exec_start`; the process runs on past `yield_time_ms` and the
model polls or types into it by its session id. The session's hooks hand over to this class:

```
pty_exec_start(tty=True)      ──▶   shells.create(argv, cwd=root, user=, env=manifest env)
                                    + shells.attach(id, write=True): the one writer per session
pty_exec_start(tty=False)     ──▶   exec_stream(argv, …) in a task: pipes, no stdin
pty_write_stdin(chars)        ──▶   terminal.send(chars)        ("\\x03" is Ctrl-C)
process exits                 ──▶   exit status reported once, the session id dropped
pty_terminate_all / stop /    ──▶   shells.close(id) (hang up) for each shell,
  shutdown                          signal(pid, SIGKILL) for each piped process
```
Output arrives in a per-process queue filled by a task that reads the terminal (or the exec
stream); each call hands back what came within its yield time, as the SDK's own
`collect_pty_output` cuts and truncates it to `max_output_tokens`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from typing import cast

import isorun
from agents.sandbox.errors import ExecTimeoutError, ExecTransportError, PtySessionNotFoundError
from agents.sandbox.session.pty_output import collect_pty_output
from agents.sandbox.session.pty_types import (
    PTY_PROCESSES_MAX,
    PTY_PROCESSES_WARNING,
    PtyExecUpdate,
    allocate_pty_process_id,
    clamp_pty_yield_time_ms,
    process_id_to_prune_from_meta,
    resolve_pty_write_yield_time_ms,
)

logger = logging.getLogger(__name__)

# Exit status of a process killed by a signal, as a shell reports it.
SIGNAL_EXIT_BASE = 128
# The terminal a `tty=True` process gets: wide enough that most lines do not wrap.
PTY_COLS = 160
PTY_ROWS = 48
# Yield times the SDK's tools use when the caller gives none.
PTY_START_YIELD_MS = 10_000
PTY_WRITE_YIELD_MS = 250
# Attaches again after a lost connection to a shell that is still running, at most this often.
PTY_REATTACH_ATTEMPTS = 3


def exit_status(exit_code: int | None, signal_number: int | None) -> int:
    """A process's exit code, or 128 + the signal that killed it, as a shell reports it."""
    if exit_code is not None:
        return exit_code
    return SIGNAL_EXIT_BASE + (signal_number or 0)


@dataclass(eq=False)
class _PtyProcess:
    """One process behind a PTY session id: a shell on a terminal (`tty`), or a piped exec.

    A reader task (`pump`) moves its output into `output_chunks`, the queue the SDK's
    `collect_pty_output` drains, and sets `done` (with `exit_code`) when it has ended.
    """

    tty: bool
    shell_id: str | None = None
    pid: int | None = None
    terminal: isorun.AsyncTerminal | None = None
    pump: asyncio.Task[None] | None = None
    exit_code: int | None = None
    last_used: float = field(default_factory=time.monotonic)
    output_chunks: deque[bytes] = field(default_factory=deque)
    output_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    output_notify: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, chunk: bytes) -> None:
        self.output_chunks.append(chunk)
        self.output_notify.set()

    def finish(self, exit_code: int | None) -> None:
        self.exit_code = exit_code
        self.done.set()
        self.output_notify.set()


class PtyProcesses:
    """The processes a session started for the shell tool, and what they have written since.

    Args:
        sandbox: The VM they run in.
    """

    def __init__(self, sandbox: isorun.AsyncSandbox) -> None:
        self._sandbox = sandbox
        self._lock = asyncio.Lock()
        self._processes: dict[int, _PtyProcess] = {}
        self._reserved_ids: set[int] = set()

    async def start(
        self,
        argv: list[str],
        *,
        tty: bool,
        user: str | None,
        cwd: str | None,
        env: Mapping[str, str],
        timeout_s: float | None,
        yield_time_s: float | None,
        max_output_tokens: int | None,
    ) -> PtyExecUpdate:
        """Start `argv` and give what it wrote within the yield time; `timeout_s` bounds the
        start only. A process still running keeps a session id for `write`."""
        process = _PtyProcess(tty=tty)
        try:
            async with asyncio.timeout(timeout_s):
                if tty:
                    await self._start_shell(process, argv, user=user, cwd=cwd, env=env)
                else:
                    await self._start_piped(process, argv, user=user, cwd=cwd, env=env)
        except isorun.IsorunError as e:
            await self._end(process)
            # Nothing ran unless the answer was lost: the shell tool may fall back to exec.
            retry_safe = not isinstance(e, isorun.OutcomeUnknown)
            raise ExecTransportError(
                command=argv, context={"retry_safe": retry_safe}, cause=e, retryable=e.retryable
            ) from e
        except TimeoutError as e:
            await self._end(process)
            raise ExecTimeoutError(command=argv, timeout_s=timeout_s, cause=e) from e
        except BaseException:
            await self._end(process)
            raise

        async with self._lock:
            process_id = allocate_pty_process_id(self._reserved_ids)
            self._reserved_ids.add(process_id)
            pruned = self._prune()
            self._processes[process_id] = process
            count = len(self._processes)
        if pruned is not None:
            await self._end(pruned)
        if count >= PTY_PROCESSES_WARNING:
            logger.warning("%d PTY sessions open in sandbox %s", count, self._sandbox.id)

        yield_ms = PTY_START_YIELD_MS if yield_time_s is None else int(yield_time_s * 1000)
        return await self._update(
            process_id,
            process,
            yield_time_ms=clamp_pty_yield_time_ms(yield_ms),
            max_output_tokens=max_output_tokens,
        )

    async def write(
        self,
        session_id: int,
        chars: str,
        *,
        yield_time_s: float | None,
        max_output_tokens: int | None,
    ) -> PtyExecUpdate:
        """Type `chars` into the session's terminal (empty: only poll) and give the output that
        came within the yield time."""
        async with self._lock:
            process = self._processes.get(session_id)
        if process is None:
            raise PtySessionNotFoundError(session_id=session_id)
        if chars:
            if process.terminal is None:
                # The shell tool's own words: it tells the model to use `tty=true`.
                raise RuntimeError("stdin is not available for this process")
            try:
                await process.terminal.send(chars)
            except isorun.TerminalClosed:
                # It has ended: the exit is in the output collected below.
                logger.debug("PTY session %s ended before its input", session_id)
            except isorun.IsorunError as e:
                raise ExecTransportError(
                    command=["write_stdin", str(session_id)], cause=e, retryable=e.retryable
                ) from e
        yield_ms = PTY_WRITE_YIELD_MS if yield_time_s is None else int(yield_time_s * 1000)
        update = await self._update(
            session_id,
            process,
            yield_time_ms=resolve_pty_write_yield_time_ms(
                yield_time_ms=yield_ms, input_empty=chars == ""
            ),
            max_output_tokens=max_output_tokens,
        )
        process.last_used = time.monotonic()
        return update

    async def terminate_all(self) -> None:
        """Hang up every shell and kill every piped process."""
        async with self._lock:
            processes = list(self._processes.values())
            self._processes.clear()
            self._reserved_ids.clear()
        await asyncio.gather(*(self._end(p) for p in processes))

    async def _start_shell(
        self,
        process: _PtyProcess,
        argv: list[str],
        *,
        user: str | None,
        cwd: str | None,
        env: Mapping[str, str],
    ) -> None:
        shell = await self._sandbox.shells.create(
            argv, cols=PTY_COLS, rows=PTY_ROWS, env=env, cwd=cwd, user=user
        )
        process.shell_id, process.pid = shell.id, shell.pid
        # With the scrollback: what it wrote before the attach, even if it has already ended.
        process.terminal = await self._sandbox.shells.attach(shell.id, write=True)
        process.pump = asyncio.create_task(self._pump_terminal(process))

    async def _pump_terminal(self, process: _PtyProcess) -> None:
        assert process.terminal is not None and process.shell_id is not None
        attempts = 0
        while True:
            terminal = process.terminal
            try:
                while True:
                    item = await terminal.recv()
                    if isinstance(item, bytes):
                        process.emit(item)
                    elif isinstance(item, isorun.ShellExit):
                        process.finish(item.status)
                        return
            except isorun.IsorunError as e:
                lost: isorun.IsorunError = e
            # The attach ended without the shell's exit: find out how the shell is doing.
            try:
                shell = next(
                    (s for s in await self._sandbox.shells.list() if s.id == process.shell_id),
                    None,
                )
                if shell is not None and not shell.running:
                    process.finish(exit_status(shell.exit_code, shell.signal))
                    return
                if shell is not None and attempts < PTY_REATTACH_ATTEMPTS:
                    attempts += 1
                    await terminal.close()
                    process.terminal = await self._sandbox.shells.attach(
                        process.shell_id, write=True, scrollback=False
                    )
                    continue
            except isorun.IsorunError as e:
                lost = e
            process.emit(f"\n[isorun: lost the terminal: {lost}]\n".encode())
            process.finish(None)
            return

    async def _start_piped(
        self,
        process: _PtyProcess,
        argv: list[str],
        *,
        user: str | None,
        cwd: str | None,
        env: Mapping[str, str],
    ) -> None:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        process.pump = asyncio.create_task(
            self._pump_piped(process, argv, user=user, cwd=cwd, env=env, started=started)
        )
        await started

    async def _pump_piped(
        self,
        process: _PtyProcess,
        argv: list[str],
        *,
        user: str | None,
        cwd: str | None,
        env: Mapping[str, str],
        started: asyncio.Future[None],
    ) -> None:
        try:
            # An async generator: closing it ends the HTTP stream (the process goes on).
            events = cast(
                AsyncGenerator[isorun.ExecEvent, None],
                self._sandbox.exec_stream(argv, cwd=cwd, user=user, env=env),
            )
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, isorun.StartEvent):
                        process.pid = event.pid
                        if not started.done():
                            started.set_result(None)
                    elif isinstance(event, isorun.OutputEvent):
                        process.emit(event.data)
                    elif isinstance(event, isorun.ExitEvent):
                        process.finish(exit_status(event.exit_code, event.signal))
                        return
            raise isorun.ProtocolError(
                "the exec stream ended without an exit", sandbox_id=self._sandbox.id
            )
        except isorun.IsorunError as e:
            if not started.done():
                started.set_exception(e)
                return
            process.emit(f"\n[isorun: lost the process: {e}]\n".encode())
            process.finish(None)

    async def _update(
        self,
        process_id: int,
        process: _PtyProcess,
        *,
        yield_time_ms: int,
        max_output_tokens: int | None,
    ) -> PtyExecUpdate:
        output, original_token_count, output_closed = await collect_pty_output(
            output_chunks=process.output_chunks,
            output_lock=process.output_lock,
            output_notify=process.output_notify,
            is_done=process.done.is_set,
            yield_time_ms=yield_time_ms,
            max_output_tokens=max_output_tokens,
        )
        if not output_closed:
            return PtyExecUpdate(
                process_id=process_id,
                output=output,
                exit_code=None,
                original_token_count=original_token_count,
            )
        # Ended: its status is reported once, and its session id is gone.
        async with self._lock:
            removed = self._processes.pop(process_id, None)
            self._reserved_ids.discard(process_id)
        if removed is not None:
            await self._end(removed)
        return PtyExecUpdate(
            process_id=None,
            output=output,
            exit_code=process.exit_code,
            original_token_count=original_token_count,
        )

    def _prune(self) -> _PtyProcess | None:
        """Make room for one more (isorun, like the SDK, allows 64 shells): the least recently
        used, ended ones first, the newest few spared. Called under the lock."""
        if len(self._processes) < PTY_PROCESSES_MAX:
            return None
        meta = [(pid, p.last_used, p.done.is_set()) for pid, p in self._processes.items()]
        process_id = process_id_to_prune_from_meta(meta)
        if process_id is None:
            return None
        self._reserved_ids.discard(process_id)
        return self._processes.pop(process_id, None)

    async def _end(self, process: _PtyProcess) -> None:
        """Stop reading, detach, and end the process if it still runs; never raises."""
        if process.pump is not None and not process.pump.done():
            process.pump.cancel()
            await asyncio.gather(process.pump, return_exceptions=True)
        if process.terminal is not None:
            with suppress(Exception):
                await process.terminal.close()
        try:
            if process.shell_id is not None:
                # Hangs it up if it runs; forgets it (and frees its slot) if it has ended.
                await self._sandbox.shells.close(process.shell_id)
            elif process.pid is not None and not process.done.is_set():
                await self._sandbox.signal(process.pid, signal.SIGKILL)
        except isorun.NotFound:
            pass
        except isorun.IsorunError:
            logger.warning(
                "could not end PTY process %s in sandbox %s",
                process.shell_id or process.pid,
                self._sandbox.id,
            )
        process.done.set()
        process.output_notify.set()
