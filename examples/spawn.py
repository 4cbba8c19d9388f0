"""The landing page's spawn.py: spawn a Linux VM, run code, destroy it.

    ISORUN_API_URL=... ISORUN_API_KEY=... uv run python examples/spawn.py

(`make run` starts `isorun up` and runs this against it.) The landing page's snippet awaits at
top level, as a notebook or `python -m asyncio` does; a script wraps it in `asyncio.run`. Its
`'2**32'` is printed here, so the run shows the result.
"""

import asyncio

from isorun import Sandbox


async def main() -> None:
    # spawn a Linux VM, run code, destroy it
    sb = await Sandbox.create()
    r = await sb.run("python", "-c", "print(2**32)")
    print(r.stdout, end="")
    await sb.destroy()


asyncio.run(main())
