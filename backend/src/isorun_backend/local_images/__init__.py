"""Short image names served from base images built on this machine (`isorun up --local-images`).

The embedded default must work where Docker Hub cannot be reached, so instead of mapping
`python` to Docker Hub it can build that image from Debian packages and serve it from a loopback
registry of its own:

```
serve_local_images(dir)   python_image(): debootstrap + OCI layout, cached per machine (debian)
                          docker-registry on 127.0.0.1:<free port>, storage <dir>/storage
                          push isorun/python:3.11-bookworm (blobs already stored are skipped)
  -> {"python": "127.0.0.1:PORT/isorun/python:3.11-bookworm"}   the aliases to run with
(exit)                    the registry is stopped by PID; its storage stays for the next start
```

A deployment with internet keeps the Docker Hub aliases of `BackendSettings.image_aliases`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from isorun_backend.local_images.debian import PYTHON_IMAGE, python_image
from isorun_backend.local_images.push import push
from isorun_backend.local_images.registry import RegistryProcess, registry_process

REPO_PREFIX = "isorun/"

__all__ = ["REPO_PREFIX", "LocalImages", "serve_local_images"]


class LocalImages:
    """The running registry and the short names it serves."""

    def __init__(self, registry: RegistryProcess, aliases: dict[str, str]) -> None:
        self.registry = registry
        self.aliases = aliases


@contextlib.contextmanager
def serve_local_images(
    directory: Path, *, cache: Path | None = None, log: Callable[[str], None] = print
) -> Iterator[LocalImages]:
    """Build (or find cached) the local base images and serve them until the block ends.

    Raises:
        RuntimeError: debootstrap or the registry failed.
        httpx.HTTPError: the push to the registry failed.
    """
    image = python_image(cache, log)
    with registry_process(directory, directory / "storage") as registry:
        name, _, tag = image.name_tag.partition(":")
        push(image.layout, registry.url, REPO_PREFIX + name, tag, source_tag=image.name_tag)
        reference = f"{registry.host}/{REPO_PREFIX}{PYTHON_IMAGE}"
        yield LocalImages(registry, {"python": reference})
