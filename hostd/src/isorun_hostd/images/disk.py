"""Build the read-only erofs disk of an unpacked image with `mkfs.erofs`.

`mkfs.erofs -zlz4 --quiet OUT SRC` (erofs-utils 1.5, measured in research/oci-lab.md section 4):

- lz4 rather than uncompressed: the python image is 100 MiB instead of 154 MiB for 0.1 s more
  build time, and reads as fast (lz4 decompression is cheaper than the extra I/O). The guest's
  Debian 6.1 kernel has `EROFS_FS_ZIP` with lz4, and lz4 is all erofs-utils 1.5 offers besides
  lz4hc, which is 10x slower to build for 6% less.
- No `-T`: a fixed timestamp on every inode breaks timestamp-checked `.pyc` files on a
  read-only root. The default keeps each file's mtime (only mtimes after the build time are
  clamped). mkfs runs with a fixed minimal environment, so an inherited `SOURCE_DATE_EPOCH`
  cannot have the same effect.
- No `-Eztailpacking` or `-C`: smaller images, but newer on-disk features than we need, and
  the build time matters more on a cache miss.

Arguments are passed as a list, never through a shell; `SRC` and `OUT` are paths we made.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from isorun_hostd.images.errors import DiskBuildError

MKFS_EROFS = "mkfs.erofs"
MKFS_ARGS = ("-zlz4", "--quiet")
MKFS_TIMEOUT_S = 600.0
MKFS_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
STDERR_TAIL_CHARS = 2000


async def build_erofs(reference: str, source: Path, output: Path) -> None:
    """Write an erofs image of the directory `source` to `output` (which must not exist).

    Raises:
        DiskBuildError: mkfs.erofs is missing, failed, or ran past MKFS_TIMEOUT_S.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            MKFS_EROFS,
            *MKFS_ARGS,
            str(output),
            str(source),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=MKFS_ENV,
        )
    except FileNotFoundError as exc:
        raise DiskBuildError(reference, detail=f"{MKFS_EROFS} not found (erofs-utils)") from exc
    try:
        output_bytes, _ = await asyncio.wait_for(process.communicate(), MKFS_TIMEOUT_S)
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise DiskBuildError(reference, detail=f"timed out after {MKFS_TIMEOUT_S:.0f} s") from exc
    except asyncio.CancelledError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        text = output_bytes.decode("utf-8", "replace")[-STDERR_TAIL_CHARS:].strip()
        raise DiskBuildError(reference, detail=f"exit status {process.returncode}: {text}")
