"""`ShellTerminal`'s buffer, without a shell: UTF-8 across chunks, the output bound, the cut."""

from __future__ import annotations

from typing import cast

from isorun import AsyncSandbox
from isorun_mcp import _terminals
from isorun_mcp._terminals import ShellTerminal


def terminal() -> ShellTerminal:
    # Never attached: collect returns at once with what was appended.
    return ShellTerminal(cast(AsyncSandbox, None), "sh-000000000000")


async def test_output_is_utf8_with_bad_bytes_replaced() -> None:
    term = terminal()
    euro = "€".encode()
    term._append(b"price: " + euro[:1])
    term._append(euro[1:] + b"5\r\n\xff")
    got = await term.collect(1.0, 1024)
    assert (got.output, got.truncated, got.exit) == ("price: €5\r\n\ufffd", False, None)
    assert (await term.collect(1.0, 1024)).output == ""


async def test_long_output_keeps_its_head_and_tail() -> None:
    term = terminal()
    term._append(b"a" * 600 + b"b" * 600)
    got = await term.collect(1.0, 400)
    assert got.truncated
    assert got.output == "a" * 200 + "\n[... 800 bytes of output omitted ...]\n" + "b" * 200


async def test_output_past_the_buffer_is_counted_as_dropped() -> None:
    term = terminal()
    bound = _terminals.BUFFER_BYTES
    term._append(b"x" * bound)
    term._append(b"end")
    got = await term.collect(1.0, bound + 100)
    assert got.truncated
    assert got.output.startswith("[... 3 earlier bytes of output were not kept ...]\n")
    assert got.output.endswith("xend")
