"""Apply image layers to a directory: whiteouts, path safety, diff_id checks, metadata.

Each layer blob is opened, its compression detected by magic (gzip `1f 8b`, zstd `28 b5 2f fd`,
otherwise plain tar), and the uncompressed stream is read once: entries are applied as they come
and every byte is hashed, so the sha256 of the whole tar (padding included) can be checked against
the config's `diff_ids` entry when the stream ends.

Rules (OCI image-spec layer.md, and what Docker and umoci do):

- Layers apply in order. An entry replaces what is at its path, except that a directory over a
  directory merges (the new metadata wins).
- `.wh.NAME` removes NAME as the lower layers left it. `.wh..wh..opq` empties its directory of
  everything from lower layers; entries of the same layer stay, whichever order the tar has them
  in (hence the per-layer `touched` set). Other `.wh..wh.*` names are aufs bookkeeping: skipped.
- Entry names are relative: a leading `/` or any `..` component is refused, not clamped.
- Parent directories resolve as if chrooted into the root: a symlink with an absolute target is
  followed from the root, a relative one from its directory, and one that climbs above the root
  is refused. Missing parents are created (0755). Every path handed to the kernel therefore has
  only real directories above its last component, which is never followed (O_NOFOLLOW, lchown,
  linkat without AT_SYMLINK_FOLLOW): nothing can be written outside the root.
- Hardlink targets follow the same name rules and must already exist inside the root.
- Device nodes and fifos are refused: a base image has no use for them and the guest gets its
  own devtmpfs.
- uid/gid (when running as root), mode including setuid bits, mtime and `SCHILY.xattr.*` are
  kept. Directory modes and mtimes are set last, deepest first, because creating children
  changes a directory's mtime and a 0555 directory would block its own children.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from isorun_hostd.images.errors import CorruptLayer, SpecialFile, UnpackFailed, UnsafePath

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."
MAX_SYMLINK_HOPS = 40
COPY_CHUNK_BYTES = 1 << 20
DEFAULT_DIR_MODE = 0o755


@dataclass(frozen=True)
class Layer:
    """One layer to apply: the verified blob and the diff_id its tar must hash to."""

    digest: str
    path: Path
    diff_id: str
    size: int


class _LayerStream:
    """Decompressed reader over a blob file that hashes what it yields and counts blob bytes."""

    def __init__(self, blob: BinaryIO, reference: str, layer: str) -> None:
        self._reference = reference
        self._layer = layer
        self._blob = blob
        self.hasher = hashlib.sha256()
        magic = blob.read(4)
        blob.seek(0)
        self._inner: IO[bytes]
        if magic.startswith(GZIP_MAGIC):
            self._inner = cast(IO[bytes], gzip.GzipFile(fileobj=blob, mode="rb"))
        elif magic == ZSTD_MAGIC:
            reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
            self._inner = cast(IO[bytes], reader)
        else:
            self._inner = blob

    @property
    def blob_bytes_read(self) -> int:
        return self._blob.tell()

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._inner.read(size)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise CorruptLayer(
                self._reference, layer=self._layer, detail=f"cannot decompress: {exc}"
            ) from exc
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(COPY_CHUNK_BYTES):
            pass


class _Unpacker:
    def __init__(self, reference: str, root: Path, stop: threading.Event) -> None:
        self.reference = reference
        self.stop = stop
        self.root = str(root)
        self.preserve_owner = os.geteuid() == 0
        # Directory metadata applied in finish(): rel path -> (mode, mtime_ns).
        self.dir_meta: dict[str, tuple[int, int]] = {"": (DEFAULT_DIR_MODE, 0)}
        self.layer = ""
        self.entry = ""
        self.touched: set[str] = set()

    def apply(self, layer: Layer, on_bytes: Callable[[int], None] | None) -> bool:
        """Apply one layer; False if stopped before the end."""
        self.layer = layer.digest
        self.touched = set()
        with open(layer.path, "rb") as blob:
            stream = _LayerStream(blob, self.reference, layer.digest)
            try:
                with tarfile.open(
                    fileobj=cast(IO[bytes], stream),
                    mode="r|",
                    encoding="utf-8",
                    errors="surrogateescape",
                ) as tar:
                    for member in tar:
                        if self.stop.is_set():
                            return False
                        self.entry = member.name
                        self._apply_entry(tar, member)
                        if on_bytes is not None:
                            on_bytes(stream.blob_bytes_read)
                stream.drain()
            except (tarfile.TarError, EOFError) as exc:
                raise CorruptLayer(
                    self.reference, layer=self.layer, detail=f"bad tar: {exc}"
                ) from exc
            except OSError as exc:
                raise UnpackFailed(
                    self.reference, layer=self.layer, entry=self.entry, detail=str(exc)
                ) from exc
        actual = "sha256:" + stream.hasher.hexdigest()
        if actual != layer.diff_id:
            raise CorruptLayer(
                self.reference,
                layer=self.layer,
                detail=f"uncompressed sha256 {actual} does not match diff_id {layer.diff_id}",
            )
        return True

    def finish(self) -> None:
        for rel in sorted(self.dir_meta, key=lambda rel: rel.count("/") + bool(rel), reverse=True):
            path = self._full(rel)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
            except FileNotFoundError:
                continue
            mode, mtime_ns = self.dir_meta[rel]
            os.chmod(path, mode)
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def _full(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _unsafe(self, detail: str) -> UnsafePath:
        return UnsafePath(self.reference, layer=self.layer, entry=self.entry, detail=detail)

    def _split(self, name: str, what: str) -> list[str]:
        if name.startswith("/"):
            raise self._unsafe(f"absolute {what}")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise self._unsafe(f"'..' in {what}")
        return parts

    def _resolve(self, parts: Sequence[str], *, create: bool) -> list[str] | None:
        """Real directory path (relative to the root) of `parts`, following symlinks chrooted.

        A missing directory is created when `create`, else the answer is None.
        """
        resolved: list[str] = []
        pending = list(parts)
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise self._unsafe("a symlink on its path climbs above the image root")
                resolved.pop()
                continue
            path = os.path.join(self.root, *resolved, part)
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(path, DEFAULT_DIR_MODE)
                resolved.append(part)
                self.dir_meta["/".join(resolved)] = (DEFAULT_DIR_MODE, 0)
                self._touch("/".join(resolved))
                continue
            if stat.S_ISLNK(mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise self._unsafe("too many levels of symlinks")
                target = os.readlink(path)
                if target.startswith("/"):
                    resolved = []
                pending = target.split("/") + pending
                continue
            if not stat.S_ISDIR(mode):
                raise self._unsafe(f"parent {'/'.join([*resolved, part])} is not a directory")
            resolved.append(part)
        return resolved

    def _touch(self, rel: str) -> None:
        while rel and rel not in self.touched:
            self.touched.add(rel)
            rel = rel.rpartition("/")[0]

    def _remove(self, rel: str) -> None:
        path = self._full(rel)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _clear_lower(self, rel: str) -> None:
        for child in os.listdir(self._full(rel)):
            child_rel = f"{rel}/{child}" if rel else child
            if child_rel not in self.touched:
                self._remove(child_rel)
            elif stat.S_ISDIR(os.lstat(self._full(child_rel)).st_mode):
                self._clear_lower(child_rel)

    def _apply_entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self._split(member.name, "path")
        if not parts:
            if member.isdir():
                self.dir_meta[""] = (stat.S_IMODE(member.mode), _mtime_ns(member))
            return
        if member.ischr() or member.isblk() or member.isfifo():
            kind = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device"}
            raise SpecialFile(
                self.reference,
                layer=self.layer,
                entry=member.name,
                detail=kind.get(member.type, "fifo"),
            )
        name = parts[-1]
        if name.startswith(WHITEOUT_PREFIX):
            whited = self._resolve(parts[:-1], create=False)
            if whited is not None:
                self._whiteout("/".join(whited), name)
            return
        parent = "/".join(self._resolve(parts[:-1], create=True) or [])
        rel = f"{parent}/{name}" if parent else name
        path = self._full(rel)
        existing = _lstat_mode(path)
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing)):
            self._remove(rel)
        self._create(tar, member, rel, merge=existing is not None and stat.S_ISDIR(existing))
        self._touch(rel)
        if not member.islnk():
            self._set_metadata(member, path)

    def _create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, merge: bool) -> None:
        path = self._full(rel)
        if member.isdir():
            if not merge:
                os.mkdir(path, 0o700)
            self.dir_meta[rel] = (stat.S_IMODE(member.mode), _mtime_ns(member))
        elif member.isreg():
            self._write_file(tar, member, path)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            self._hardlink(member, path)
        else:
            raise CorruptLayer(
                self.reference,
                layer=self.layer,
                detail=f"entry {member.name!r} has unsupported tar type {member.type!r}",
            )

    def _set_metadata(self, member: tarfile.TarInfo, path: str) -> None:
        if self.preserve_owner:
            os.lchown(path, member.uid, member.gid)
        if member.isreg():
            # After lchown, which clears setuid/setgid bits.
            os.chmod(path, stat.S_IMODE(member.mode))
        _set_xattrs(path, member)
        if not member.isdir():
            mtime = _mtime_ns(member)
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

    def _whiteout(self, parent: str, name: str) -> None:
        if name == OPAQUE_MARKER:
            self._clear_lower(parent)
            return
        if name.startswith(AUFS_META_PREFIX):
            return
        target = name[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise self._unsafe("whiteout of nothing")
        rel = f"{parent}/{target}" if parent else target
        if rel not in self.touched:
            self._remove(rel)

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        source = tar.extractfile(member)
        if source is None:
            raise CorruptLayer(
                self.reference, layer=self.layer, detail=f"no data for {member.name!r}"
            )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
            shutil.copyfileobj(source, out, COPY_CHUNK_BYTES)

    def _hardlink(self, member: tarfile.TarInfo, path: str) -> None:
        target_parts = self._split(member.linkname, "hardlink target")
        if not target_parts:
            raise self._unsafe("hardlink to the image root")
        parent = self._resolve(target_parts[:-1], create=False)
        target = os.path.join(self.root, *(parent or []), target_parts[-1])
        mode = None if parent is None else _lstat_mode(target)
        if mode is None:
            raise self._unsafe(f"hardlink target {member.linkname!r} does not exist")
        if stat.S_ISDIR(mode):
            raise self._unsafe(f"hardlink target {member.linkname!r} is a directory")
        os.link(target, path, follow_symlinks=False)


def _lstat_mode(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return round(float(member.mtime) * 1_000_000_000)


def _set_xattrs(path: str, member: tarfile.TarInfo) -> None:
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            os.setxattr(
                path,
                key.removeprefix("SCHILY.xattr."),
                value.encode("utf-8", "surrogateescape"),
                follow_symlinks=False,
            )


def unpack_layers(
    reference: str,
    root: Path,
    layers: Sequence[Layer],
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Apply `layers` in order into the empty directory `root`.

    Blocking (run it in a thread). `on_progress(layer_index, blob_bytes_done)` is called from
    this thread as each entry is applied. Setting `stop` makes it return early, between entries,
    leaving a partial tree for the caller to remove.

    Raises:
        CorruptLayer: Undecodable compression or tar, or an uncompressed sha256 other than the
            layer's diff_id.
        UnsafePath: An entry or hardlink target outside the root, or a path through a symlink
            that climbs above it.
        SpecialFile: A device node or fifo.
        UnpackFailed: The filesystem under `root` refused a write.
    """
    unpacker = _Unpacker(reference, root, stop or threading.Event())
    for index, layer in enumerate(layers):
        callback = None
        if on_progress is not None:

            def callback(done: int, index: int = index) -> None:
                on_progress(index, done)

        if not unpacker.apply(layer, callback):
            return
    unpacker.finish()
