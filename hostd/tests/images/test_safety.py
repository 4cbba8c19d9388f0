"""Malicious layers are refused, nothing lands outside the unpack root, nothing is left behind."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from isorun_hostd.images import ImageDisk, ImageStore, SpecialFile, UnsafePath

from tests.fixtures.build import EVIL_TARGETS
from tests.framework.registry import Registry

HOSTNAME = Path("/etc/hostname")


@pytest.mark.parametrize(
    "case",
    [
        ("dotdot", UnsafePath, "'..' in path"),
        ("abs", UnsafePath, "absolute path"),
        ("symlink", UnsafePath, "a symlink on its path climbs above the image root"),
        ("hardlink", UnsafePath, "'..' in hardlink target"),
        ("devnode", SpecialFile, "'null' is a character device: special files are refused"),
    ],
)
async def test_evil_image_refused(
    registry: Registry,
    store: ImageStore,
    store_leftovers: Callable[[], list[str]],
    evil_targets: Path,
    case: tuple[str, type[Exception], str],
) -> None:
    tag, error, detail = case
    hostname_links = HOSTNAME.stat().st_nlink if HOSTNAME.exists() else None
    reference = registry.ref(f"evil:{tag}")

    with pytest.raises(error) as raised:
        await store.pull(reference)

    message = str(raised.value)
    assert message.startswith(f"image {reference}: layer sha256:")
    assert detail in message
    assert not evil_targets.exists()
    if hostname_links is not None:
        assert HOSTNAME.stat().st_nlink == hostname_links
    assert store_leftovers() == []


async def test_absolute_symlink_is_resolved_inside_the_root(
    registry: Registry,
    store: ImageStore,
    evil_targets: Path,
    extract: Callable[[ImageDisk], Path],
) -> None:
    """`escape -> /tmp/isorun-evil` is followed as if chrooted: the file stays in the image."""
    disk = await store.pull(registry.ref("evil:symlink-abs"))
    assert not evil_targets.exists()
    root = extract(disk)
    assert os.readlink(root / "escape") == str(EVIL_TARGETS["symlink-abs"].parent)
    inside = root / str(EVIL_TARGETS["symlink-abs"]).lstrip("/")
    assert inside.read_text() == "contained\n"
