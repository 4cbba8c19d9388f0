"""Content-addressed blob store: `blobs/sha256/<hex>`, written only after verification.

A blob is streamed into a temporary file under `tmp/`, hashed and counted on the way, and renamed
into place only when its size and sha256 match the descriptor. Readers therefore see either no
file or a verified one; a failed or interrupted download leaves nothing behind (the temporary file
is removed in a `finally`). `tmp/` and `blobs/` are on one filesystem so the rename is atomic.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from isorun_hostd.images.errors import ContentTooLarge, DigestMismatch

MAX_DOCUMENT_BYTES = 4 << 20


class BlobStore:
    """Verified blobs by digest.

    Args:
        root: Directory holding `sha256/<hex>` files.
        tmp: Directory for downloads in progress, on the same filesystem as `root`.
    """

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp

    def path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.root / algorithm / hexdigest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read_document(self, digest: str) -> bytes | None:
        """A stored manifest or config, re-verified (they are small), or None if absent/bad."""
        path = self.path(digest)
        try:
            if path.stat().st_size > MAX_DOCUMENT_BYTES:
                return None
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return None
        return data

    def put_document(self, digest: str, data: bytes) -> None:
        """Store bytes whose digest the caller has already verified."""
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="doc-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp_name, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)

    async def put_stream(
        self,
        reference: str,
        digest: str,
        size: int,
        chunks: AsyncIterator[bytes],
        on_bytes: Callable[[int], None] | None = None,
    ) -> Path:
        """Stream `chunks` into the store, checking them against `digest` and `size`.

        Raises:
            ContentTooLarge: More than `size` bytes arrived (the download stops there).
            DigestMismatch: Fewer bytes, or the sha256 differs.
        """
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        received = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > size:
                        raise ContentTooLarge(reference, what=f"blob {digest}", limit_bytes=size)
                    hasher.update(chunk)
                    out.write(chunk)
                    if on_bytes is not None:
                        on_bytes(received)
            actual = "sha256:" + hasher.hexdigest()
            if received != size or actual != digest:
                raise DigestMismatch(
                    reference,
                    what=f"blob ({received} of {size} bytes)",
                    expected=digest,
                    actual=actual,
                )
            os.replace(tmp_name, final)
            return final
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
