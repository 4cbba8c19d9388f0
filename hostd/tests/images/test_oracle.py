"""Differential check: our disk's tree equals what skopeo + umoci unpack from the same registry.

umoci 0.4.7 (Debian) cannot read zstd layers, so only gzip images are compared. Compared per
path: type, mode, uid, gid, and content hash or symlink target.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from image_support import tree
from isorun_hostd.images import ImageDisk, ImageStore

from tests.framework.registry import Registry

ORACLE_TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(
    not (shutil.which("skopeo") and shutil.which("umoci")), reason="skopeo and umoci needed"
)


def umoci_rootfs(registry: Registry, name_tag: str, work: Path) -> Path:
    work.mkdir()
    layout = work / "layout"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--src-tls-verify=false",
            f"docker://{registry.ref(name_tag)}",
            f"oci:{layout}:image",
        ],
        check=True,
        timeout=ORACLE_TIMEOUT_S,
    )
    bundle = work / "bundle"
    subprocess.run(
        ["umoci", "--log", "error", "unpack", "--image", f"{layout}:image", str(bundle)],
        check=True,
        timeout=ORACLE_TIMEOUT_S,
    )
    return bundle / "rootfs"


@pytest.mark.parametrize("name_tag", ["busybox:1.0", "whiteout:1.0", "multi:1.0"])
async def test_same_tree_as_umoci(
    registry: Registry,
    store: ImageStore,
    extract: Callable[[ImageDisk], Path],
    tmp_path: Path,
    name_tag: str,
) -> None:
    ours = tree(extract(await store.pull(registry.ref(name_tag))))
    theirs = tree(umoci_rootfs(registry, name_tag, tmp_path / "umoci"))
    assert ours == theirs
