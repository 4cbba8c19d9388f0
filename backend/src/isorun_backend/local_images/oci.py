"""A stdlib-only writer of OCI image layouts, reproducible byte for byte.

Used by `isorun up --local-images` for its Debian base images and by the test fixtures (through
`tests/fixtures/oci.py`) for everything else they build.

Reproducible: entry mtimes are clamped to MTIME_CLAMP, tars are PAX with empty user/group
names and sorted entries, gzip has mtime 0 and no file name, JSON is canonical (sorted keys,
no spaces). The same inputs give the same digests on every machine, so a fixture's digest can
be a cache key.

Layers come from a directory (`entries_from_dir`) or from an explicit list of `Entry` objects,
so a test can craft what no well-behaved builder writes: `..` names, absolute paths, symlinks
out of the root, device nodes, whiteouts.

```
<layout>/oci-layout                   {"imageLayoutVersion": "1.0.0"}
<layout>/index.json                   one entry per tag (org.opencontainers.image.ref.name)
<layout>/blobs/sha256/<hex>           layers, configs, manifests, indexes
```

Docker media types (v2 schema 2 manifest, manifest list, rootfs.diff.tar.gzip) are written on
request; skopeo cannot read those from an OCI layout, which is why `push` exists.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MTIME_CLAMP = 1_700_000_000
GZIP_LEVEL = 6

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
REF_NAME = "org.opencontainers.image.ref.name"

EntryKind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]
_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


@dataclass(frozen=True)
class Entry:
    """One tar entry, written exactly as given (no name cleaning)."""

    name: str
    kind: EntryKind = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    mtime: int = MTIME_CLAMP
    xattrs: dict[str, bytes] = field(default_factory=dict)


def file(name: str, data: bytes | str = b"", mode: int = 0o644) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode)


def directory(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, "dir", mode=mode)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, "symlink", mode=0o777, linkname=target)


def entries_from_dir(root: Path, *, skip_contents: Iterable[str] = ()) -> list[Entry]:
    """Entries for everything under `root`, sorted, hardlinks detected by inode.

    Args:
        root: The tree.
        skip_contents: Relative directory paths kept as empty directories (dev, proc, ...).
    """
    skipped = set(skip_contents)
    entries: list[Entry] = []
    first_path: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        if rel_dir in skipped:
            dirnames.clear()
            continue
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            entries.append(_entry_from_path(root / rel, rel, first_path))
    return sorted(entries, key=lambda entry: entry.name)


def _entry_from_path(path: Path, rel: str, first_path: dict[tuple[int, int], str]) -> Entry:
    st = path.lstat()
    common: dict[str, Any] = {
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime": min(int(st.st_mtime), MTIME_CLAMP),
    }
    if stat.S_ISDIR(st.st_mode):
        return Entry(rel, "dir", **common)
    if stat.S_ISLNK(st.st_mode):
        return Entry(rel, "symlink", linkname=os.readlink(path), **common)
    if stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in first_path:
            return Entry(rel, "hardlink", linkname=first_path[key], **common)
        first_path[key] = rel
        return Entry(rel, "file", data=path.read_bytes(), **common)
    kind: EntryKind = "char" if stat.S_ISCHR(st.st_mode) else "block"
    if stat.S_ISFIFO(st.st_mode):
        kind = "fifo"
    return Entry(rel, kind, devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev), **common)


def tar_bytes(entries: Sequence[Entry]) -> bytes:
    """A PAX tar of `entries`, in the order given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = _TAR_TYPES[entry.kind]
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = info.gname = ""
            info.mtime = min(entry.mtime, MTIME_CLAMP)
            info.linkname = entry.linkname
            info.devmajor, info.devminor = entry.devmajor, entry.devminor
            info.pax_headers = {
                f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
                for key, value in entry.xattrs.items()
            }
            if entry.kind == "file":
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(
        filename="", fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0
    ) as out:
        out.write(data)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class LayerBlob:
    """A layer ready to store: its blob, media type and the diff_id of its tar."""

    data: bytes
    media_type: str
    diff_id: str


def layer(
    entries: Sequence[Entry], *, compression: Literal["gzip", "none"] = "gzip", docker: bool = False
) -> LayerBlob:
    raw = tar_bytes(entries)
    if compression == "none":
        return LayerBlob(raw, OCI_LAYER_TAR, sha256(raw))
    return LayerBlob(gzip_bytes(raw), DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP, sha256(raw))


def image_config(
    diff_ids: Sequence[str],
    *,
    architecture: str = "amd64",
    variant: str | None = None,
    cmd: Sequence[str] | None = ("/bin/sh",),
    entrypoint: Sequence[str] | None = None,
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    working_dir: str = "",
    user: str = "",
) -> dict[str, Any]:
    config: dict[str, Any] = {"Env": list(env), "WorkingDir": working_dir, "User": user}
    if cmd is not None:
        config["Cmd"] = list(cmd)
    if entrypoint is not None:
        config["Entrypoint"] = list(entrypoint)
    document: dict[str, Any] = {
        "architecture": architecture,
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "isorun fixtures"}],
    }
    if variant:
        document["variant"] = variant
    return document


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.tags: dict[str, dict[str, Any]] = {}

    def blob(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        """Store `data`; return its descriptor (with `extra` fields such as platform)."""
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def image(
        self,
        layers: Sequence[LayerBlob],
        config: dict[str, Any] | None = None,
        *,
        docker: bool = False,
        platform: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Store layers, config and manifest; return the manifest's descriptor."""
        if config is None:
            config = image_config([blob.diff_id for blob in layers])
        config_descriptor = self.blob(
            canonical_json(config), DOCKER_CONFIG if docker else OCI_CONFIG
        )
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        manifest = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config_descriptor,
            "layers": [self.blob(blob.data, blob.media_type) for blob in layers],
        }
        extra: dict[str, Any] = {}
        if platform is not None:
            extra["platform"] = platform
        if annotations:
            extra["annotations"] = annotations
        return self.blob(canonical_json(manifest), media_type, **extra)

    def attestation(self, subject: dict[str, Any]) -> dict[str, Any]:
        """A BuildKit-style attestation manifest for `subject`, as an index entry."""
        statement = canonical_json({"_type": "https://in-toto.io/Statement/v0.1", "subject": []})
        config = self.blob(canonical_json({"architecture": "unknown", "os": "unknown"}), OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [self.blob(statement, IN_TOTO)],
        }
        return self.blob(
            canonical_json(manifest),
            OCI_MANIFEST,
            platform={"architecture": "unknown", "os": "unknown"},
            annotations={
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": subject["digest"],
            },
        )

    def index(self, manifests: Sequence[dict[str, Any]], *, docker: bool = False) -> dict[str, Any]:
        media_type = DOCKER_LIST if docker else OCI_INDEX
        document = {"schemaVersion": 2, "mediaType": media_type, "manifests": list(manifests)}
        return self.blob(canonical_json(document), media_type)

    def tag(self, descriptor: dict[str, Any], name: str) -> None:
        plain = {key: descriptor[key] for key in ("mediaType", "digest", "size")}
        self.tags[name] = {**plain, "annotations": {REF_NAME: name}}

    def save(self) -> None:
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [self.tags[name] for name in sorted(self.tags)],
        }
        (self.path / "index.json").write_bytes(canonical_json(index))


def read_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def tagged(layout: Path, name: str) -> dict[str, Any]:
    """The descriptor tagged `name` in the layout's index.json."""
    index = json.loads((layout / "index.json").read_bytes())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get(REF_NAME) == name:
            return dict(descriptor)
    raise KeyError(f"{layout}: no tag {name!r}")
