"""Guest-side outcomes as what a model reads: text, or a `ToolError` the runner reports.

A gone sandbox or an unreachable API is not the model's to fix: those isorun errors pass
through unchanged (the tool runner still reports any exception as `is_error`, but logs it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from anthropic.lib.tools import ToolError
from isorun import ExecResult, FileError, NotFound, SandboxNotFound


def exec_output(result: ExecResult, timeout_s: float | None) -> str:
    """Return stdout and stderr joined; raise `ToolError` (with them) unless the exit was 0.

    Raises:
        ToolError: The command exited non-zero, was killed, or ran past `timeout_s`.
    """
    output = "\n".join(part for part in (result.stdout, result.stderr) if part)
    if result.timed_out:
        raise ToolError(f"{output}\n[timed out after {timeout_s} s]".lstrip())
    if result.exit_code != 0:
        status = (
            f"exit code {result.exit_code}"
            if result.exit_code is not None
            else f"killed by signal {result.signal}"
        )
        raise ToolError(f"{output}\n[{status}]".lstrip())
    return output


@contextlib.contextmanager
def guest_file_errors(path: str) -> Iterator[None]:
    """Turn the guest's refusals about `path` into `ToolError`s.

    Raises:
        ToolError: No such file, or the guest could not read or write it.
    """
    try:
        yield
    except SandboxNotFound:
        raise
    except NotFound as exc:
        raise ToolError(f"{path}: no such file or directory") from exc
    except FileError as exc:
        raise ToolError(f"{path}: {exc}") from exc
