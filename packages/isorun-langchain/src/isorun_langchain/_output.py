"""How one isorun `ExecResult` reads to a model: one text and one shell-style exit status.

```
stdout ─┐
        ├─ output   stdout, then stderr on a line of its own; a timeout adds a last line
stderr ─┘
exit_code  the command's status · 124 when timed out (coreutils `timeout`) · 128+N when killed
           by signal N (the shell's convention) · None when the guest reported neither
```
"""

from __future__ import annotations

from isorun import ExecResult

TIMEOUT_EXIT_CODE = 124
"""What `timeout(1)` exits with, and what deepagents' other sandboxes report on a timeout."""


def combined_output(result: ExecResult, *, timeout_s: float | None = None) -> str:
    """Return stdout and stderr as one text, with a last line saying when the command timed out."""
    parts = [part.removesuffix("\n") for part in (result.stdout, result.stderr) if part]
    if result.timed_out:
        after = f" after {timeout_s:g} seconds" if timeout_s is not None else ""
        parts.append(f"Command timed out{after}.")
    return "\n".join(parts)


def exit_status(result: ExecResult) -> int | None:
    """Return the shell-style exit status of `result` (see the module docstring)."""
    if result.timed_out:
        return TIMEOUT_EXIT_CODE
    if result.exit_code is None and result.signal is not None:
        return 128 + result.signal
    return result.exit_code
