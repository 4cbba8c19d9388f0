"""The real-world image: debootstrap'd Debian with python3 (one 65 MB layer, 8,000+ entries)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from isorun_hostd.images import ImageDisk, ImageStore, PullProgress

pytestmark = [pytest.mark.python_image, pytest.mark.timeout(600)]


async def test_pull_python(
    python_image_ref: str,
    store: ImageStore,
    extract: Callable[[ImageDisk], Path],
) -> None:
    reports: list[PullProgress] = []
    started = time.monotonic()
    disk = await store.pull(python_image_ref, progress=reports.append)
    elapsed_s = time.monotonic() - started

    assert disk.config.cmd == ["python3"]
    assert "LANG=C.UTF-8" in disk.config.env
    assert 50 << 20 < disk.size_bytes < 200 << 20
    unpack_reports = [r for r in reports if r.phase == "unpack"]
    assert unpack_reports[-1].bytes_done == unpack_reports[-1].bytes_total
    root = extract(disk)
    assert (root / "usr" / "bin" / "python3").exists()
    assert (root / "etc" / "shadow").stat().st_gid == 42
    assert sorted(path.name for path in (root / "dev").iterdir()) == []
    print(f"python image: pull + unpack + disk {elapsed_s:.1f} s, disk {disk.size_bytes >> 20} MiB")

    started = time.monotonic()
    assert await store.pull(python_image_ref) == disk
    print(f"python image: cache hit {time.monotonic() - started:.3f} s")
