"""Blob store verification and manifest helpers (no registry)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from isorun_hostd.images import ContentTooLarge, DigestMismatch, UnsupportedMediaType
from isorun_hostd.images.blobs import BlobStore
from isorun_hostd.images.manifest import (
    LAYER_TYPES,
    chain_id,
    check_media_type,
    media_type_of,
)

DATA = b"hello blob"
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    (tmp_path / "tmp").mkdir()
    return BlobStore(tmp_path / "blobs", tmp_path / "tmp")


async def test_put_stream_verifies(blobs: BlobStore) -> None:
    seen: list[int] = []
    path = await blobs.put_stream("r", DIGEST, len(DATA), chunks(DATA[:4], DATA[4:]), seen.append)
    assert path.read_bytes() == DATA
    assert seen == [4, len(DATA)]
    assert blobs.read_document(DIGEST) == DATA


@pytest.mark.parametrize(
    ("parts", "size", "error"),
    [
        ((DATA, b"!"), len(DATA), ContentTooLarge),
        ((DATA[:-1],), len(DATA), DigestMismatch),
        ((DATA[:-1] + b"?",), len(DATA), DigestMismatch),
    ],
)
async def test_put_stream_refuses(
    blobs: BlobStore, parts: tuple[bytes, ...], size: int, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"^image r: "):
        await blobs.put_stream("r", DIGEST, size, chunks(*parts))
    assert not blobs.has(DIGEST)
    assert list(blobs.tmp.iterdir()) == []


def test_chain_id() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_id([a], "r") == a
    expected = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_id([a, b], "r") == expected


def test_media_types() -> None:
    assert media_type_of(b'{"manifests": []}', None, "r").endswith("image.index.v1+json")
    assert media_type_of(b'{"layers": []}', "application/json", "r").endswith("manifest.v1+json")
    foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    with pytest.raises(UnsupportedMediaType, match=r"unsupported media type .*foreign"):
        check_media_type(foreign, LAYER_TYPES, "layer", "r")
    with pytest.raises(UnsupportedMediaType, match="not JSON"):
        media_type_of(b"\x00", None, "r")
