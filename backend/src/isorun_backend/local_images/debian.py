"""Base images built from Debian packages with debootstrap, cached per machine.

```
debian_python_rootfs(cache)   debootstrap minbase + python3, pip, curl and the CA bundle into
                              <cache>/rootfs/ (about a minute, once per machine; needs a Debian
                              mirror, not Docker Hub)
python_image(cache)           that tree as a one-layer OCI layout tagged python:3.11-bookworm,
                              with what Docker's python images have: /usr/bin/python and pip
                              that installs into the system (no PEP 668 refusal)
```

Cache: `$ISORUN_IMAGE_CACHE` or `~/.cache/isorun/images`. Each layout directory is named by a key
over its inputs (the writer's and this module's sources, the rootfs path), so an unchanged input
skips the build and a changed one rebuilds; the debootstrap tree is cached separately, so editing
the image code does not repeat the download. A file lock serialises builders (concurrent `isorun
up`s, test sessions); each result is built in a temporary directory and renamed into place.
`cached_layout` and `locked` are shared with the test fixtures' builder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from isorun_backend.local_images import oci

CACHE_ENV = "ISORUN_IMAGE_CACHE"
DEBOOTSTRAP = (
    "debootstrap",
    "--variant=minbase",
    "--include=python3,python3-pip,curl,ca-certificates",
)
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT_S = 900
PYTHON_IMAGE = "python:3.11-bookworm"
ROOTFS_SKIP_CONTENTS = ("dev", "proc", "sys", "run")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIP_CONF = "[global]\nbreak-system-packages = true\nroot-user-action = ignore\n"


@dataclass(frozen=True)
class LayoutImage:
    """An image in an OCI layout: `name_tag` is both its tag there and its registry name."""

    name_tag: str
    layout: Path


def image_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "isorun" / "images")


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """Hold `cache`'s builder lock."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def layout_key(sources: Iterable[Path], *parts: bytes) -> str:
    """A cache key over the builder's source files and its other inputs."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def cached_layout(cache: Path, name: str, key: str, build: Callable[[oci.Layout], None]) -> Path:
    """`<cache>/<name>-<key>`, built by `build` unless present; older keys are deleted.

    Call with `locked(cache)` held.
    """
    final = cache / f"{name}-{key}"
    if (final / "index.json").exists():
        return final
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    try:
        layout = oci.Layout(work)
        build(layout)
        layout.save()
        os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for stale in cache.glob(f"{name}-*"):
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point.startswith(prefix):
            mounts.append(mount_point)
    return sorted(mounts, reverse=True)


def _remove_tree(path: Path) -> None:
    # A debootstrap that failed half way can leave proc/sys mounted inside the tree; deleting
    # through those mounts would touch the host.
    for mount_point in _mounts_under(path):
        subprocess.run(["umount", "-l", mount_point], check=False)
    if _mounts_under(path):
        raise RuntimeError(f"{path} still has mounts; not deleting it")
    shutil.rmtree(path, ignore_errors=True)


def debian_python_rootfs(cache: Path, log: Callable[[str], None] = print) -> Path:
    """debootstrap minbase + python3, pip, curl and CA certificates, cleaned of apt caches;
    built once per machine.

    Raises:
        RuntimeError: debootstrap failed (the tail of its log is in the message).
    """
    recipe = " ".join((*DEBOOTSTRAP, DEBIAN_SUITE, DEBIAN_MIRROR)).encode()
    final = (
        cache
        / "rootfs"
        / f"debian-{DEBIAN_SUITE}-python3-{hashlib.sha256(recipe).hexdigest()[:12]}"
    )
    if (final / "usr" / "bin" / "python3").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=final.parent))
    log_path = final.parent / "debootstrap.log"
    try:
        log(f"debootstrap {DEBIAN_SUITE} + python3 (about a minute, once per machine) into {work}")
        with open(log_path, "w") as out:
            result = subprocess.run(
                [*DEBOOTSTRAP, DEBIAN_SUITE, str(work), DEBIAN_MIRROR],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=DEBOOTSTRAP_TIMEOUT_S,
                check=False,
            )
        if result.returncode != 0:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"debootstrap failed ({result.returncode}), see {log_path}:\n{tail}")
        if _mounts_under(work):
            raise RuntimeError(f"debootstrap left mounts under {work}")
        for pattern in (
            "var/cache/apt/archives/*.deb",
            "var/cache/apt/*.bin",
            "var/lib/apt/lists/*",
        ):
            for path in work.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        os.replace(work, final)
    finally:
        if work.exists():
            _remove_tree(work)
    return final


def python_image(cache: Path | None = None, log: Callable[[str], None] = print) -> LayoutImage:
    """The python:3.11-bookworm image: about 40 s the first time on a machine, then cached."""
    cache = cache or image_cache()
    with locked(cache):
        rootfs = debian_python_rootfs(cache, log)

        def build(layout: oci.Layout) -> None:
            entries = oci.entries_from_dir(rootfs, skip_contents=ROOTFS_SKIP_CONTENTS)
            if not (rootfs / "usr" / "bin" / "python").exists():
                # `python` is what Docker's python images and the landing page's example run.
                entries.append(oci.symlink("usr/bin/python", "python3"))
            if not (rootfs / "usr" / "bin" / "pip").exists():
                entries.append(oci.symlink("usr/bin/pip", "pip3"))
            # Docker's python images install packages into their Python with plain `pip
            # install`, as the landing page's examples do; Debian's would refuse (PEP 668).
            entries.append(oci.file("etc/pip.conf", PIP_CONF))
            entries.sort(key=lambda entry: entry.name)
            blob = oci.layer(entries)
            config = oci.image_config(
                [blob.diff_id],
                cmd=["python3"],
                env=[PATH_ENV, "LANG=C.UTF-8"],
                working_dir="/",
            )
            layout.tag(layout.image([blob], config), PYTHON_IMAGE)

        sources = (Path(oci.__file__), Path(__file__))
        key = layout_key(sources, str(rootfs).encode())
        layout = cached_layout(cache, "python", key, build)
    return LayoutImage(PYTHON_IMAGE, layout)
