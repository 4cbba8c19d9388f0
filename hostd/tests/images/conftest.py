"""Fixtures for the image tests: stores, a recording transport, disk extraction, evil targets."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from image_support import RecordingTransport, leftovers
from isorun_hostd.images import ImageDisk, ImageStore

from tests.fixtures.build import EVIL_TARGET_DIR

FSCK_EROFS = "fsck.erofs"


@pytest.fixture
async def transport() -> AsyncIterator[RecordingTransport]:
    recording = RecordingTransport()
    yield recording
    await recording.aclose()


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path / "scratch"


@pytest.fixture
def store(cache_root: Path, scratch: Path, transport: RecordingTransport) -> ImageStore:
    return ImageStore(cache_root, scratch_dir=scratch, transport=transport)


@pytest.fixture
def store_leftovers(cache_root: Path, scratch: Path) -> Callable[[], list[str]]:
    """What a failed pull left in the store's temp, scratch and disk directories."""
    return lambda: leftovers(cache_root, scratch)


@pytest.fixture
def extract(tmp_path: Path) -> Callable[[ImageDisk], Path]:
    """Extract a disk with fsck.erofs (which also checks it) and return the tree."""
    counter = iter(range(1000))

    def run(disk: ImageDisk) -> Path:
        target = tmp_path / f"extracted-{next(counter)}"
        subprocess.run(
            [FSCK_EROFS, f"--extract={target}", "--preserve", str(disk.disk_path)],
            check=True,
            capture_output=True,
        )
        return target

    return run


@pytest.fixture
def evil_targets() -> Iterator[Path]:
    """The host directory the evil images aim at; must stay absent."""
    shutil.rmtree(EVIL_TARGET_DIR, ignore_errors=True)
    yield EVIL_TARGET_DIR
    shutil.rmtree(EVIL_TARGET_DIR, ignore_errors=True)
