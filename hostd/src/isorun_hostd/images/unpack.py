"""Apply image layers to a directory: whiteouts, path safety, diff_id checks, metadata.

Each layer blob is opened, its compression detected by magic (gzip `1f 8b`, zstd `28 b5 2f fd`,
otherwise plain tar), and the uncompressed stream is read once: entries are applied as they come
and every byte is hashed, so the sha256 of the whole tar (padding included) can be checked against
the config's `diff_ids` entry when the stream ends.

Limits: a layer is hostile input whose compressed size says nothing about what it expands to.
Every decompressed byte counts against `UnpackLimits.max_bytes` (default MAX_UNPACKED_BYTES,
16 GiB) and every entry against `max_entries` (MAX_ENTRIES, 1M), for the image as a whole;
past either the unpack fails with LayerTooLarge. GNU sparse members are refused (SpecialFile):
a few header bytes would expand to any size of zeros. `stop` is checked on every read of the
stream and every chunk copied, so a cancel does not wait for a large entry or the tail drain.

Header checks: tarfile reads a PAX x/g or GNU L/K member whole, at whatever size its header
declares, and follows chains of them recursively. A TarInfo subclass checks every header block
as tarfile parses it (so it agrees with tarfile on block alignment by construction): such a
member over MAX_HEADER_BYTES (1 MiB), more than MAX_HEADER_CHAIN - 1 of them before one entry,
more than MAX_ENTRY_HEADER_BYTES read while parsing one entry (sparse maps), or PAX global
headers over 1 MiB in all fail with CorruptLayer before the bytes are read.

Rules (OCI image-spec layer.md, and what Docker and umoci do):

- Layers apply in order. An entry replaces what is at its path, except that a directory over a
  directory merges (the new metadata wins).
- `.wh.NAME` removes NAME as the lower layers left it. `.wh..wh..opq` empties its directory of
  everything from lower layers; entries of the same layer stay, whichever order the tar has them
  in (hence the per-layer `touched` set). Other `.wh..wh.*` names are aufs bookkeeping: skipped.
- Entry names are relative: a leading `/` or any `..` component is refused, not clamped.
- Parent directories resolve as if chrooted into the root: a symlink with an absolute target is
  followed from the root, a relative one from its directory, and one that climbs above the root
  is refused. Missing parents are created (0755). The walk goes from an fd of the root, one
  component at a time, each opened with O_NOFOLLOW relative to its parent's fd, and every
  syscall of an entry takes the final directory's fd and a single name (`*at` calls) or an fd
  of the new inode (fchown, fchmod, futimens, fsetxattr); a last component is never followed
  (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, linkat without AT_SYMLINK_FOLLOW). Nothing is reached by a
  path string that a later entry could have redirected, so nothing outside the root is touched.
  Trees deeper than MAX_DEPTH directories are refused.
- Hardlink targets follow the same name rules and must already exist inside the root.
- Device nodes and fifos are refused: a base image has no use for them and the guest gets its
  own devtmpfs.
- uid/gid (when running as root), mode including setuid bits, mtime and `SCHILY.xattr.*` are
  kept. PAX makes them free text: a NUL in a name, a non-finite or out-of-range mtime, or an id
  outside uid_t is refused as CorruptLayer naming the entry, as is any other value the kernel
  interface rejects (ValueError / OverflowError).
- Directory modes and mtimes are set last, children before parents, because creating children
  changes a directory's mtime and a 0555 directory would block its own children. They are
  recorded in a tree that forgets a directory's subtree when it is removed or replaced, and
  applied through the same O_NOFOLLOW walk from the root: a directory whose parent has since
  become a symlink is skipped.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Self, cast

import zstandard

from isorun_hostd.images.errors import (
    CorruptLayer,
    LayerTooLarge,
    SpecialFile,
    UnpackFailed,
    UnsafePath,
)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."
MAX_SYMLINK_HOPS = 40
COPY_CHUNK_BYTES = 1 << 20
DEFAULT_DIR_MODE = 0o755
# Per image, all layers together; ImageStore(unpack_limits=...) overrides them. The biggest
# common base images (CUDA, ML stacks) unpack to well under 16 GiB and 1M entries; python:3.12
# is about 1 GiB and 30k entries.
MAX_UNPACKED_BYTES = 16 << 30
MAX_ENTRIES = 1_000_000
# tarfile reads an extended header's whole declared size into memory before parsing it, and a
# sparse 1.0 map as long as it claims: each PAX x/g or GNU L/K member is capped, so are the
# extended headers in front of one entry (count, and all bytes read while parsing them), and
# the PAX global headers of a layer in all.
MAX_HEADER_BYTES = 1 << 20
MAX_HEADER_CHAIN = 8
MAX_ENTRY_HEADER_BYTES = 4 << 20
_EXTENDED_HEADERS = {
    tarfile.XHDTYPE: "PAX extended header",
    tarfile.XGLTYPE: "PAX global header",
    tarfile.SOLARIS_XHDTYPE: "Solaris extended header",
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link name",
}
# Timestamps must fit utimensat in nanoseconds (int64); ids must fit uid_t, minus (uid_t)-1.
MAX_MTIME_S = (1 << 63) // 1_000_000_000 - 1
MAX_ID = (1 << 32) - 1
DIR_OPEN_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# Deeper trees are refused: shutil.rmtree and mkfs.erofs recurse per level.
MAX_DEPTH = 512


@dataclass(frozen=True)
class Layer:
    """One layer to apply: the verified blob and the diff_id its tar must hash to."""

    digest: str
    path: Path
    diff_id: str
    size: int


@dataclass(frozen=True)
class UnpackLimits:
    """What one image may unpack to, over all its layers together.

    Attributes:
        max_bytes: Uncompressed tar bytes (headers and padding included).
        max_entries: Tar entries (files, directories, links, whiteouts).
    """

    max_bytes: int = MAX_UNPACKED_BYTES
    max_entries: int = MAX_ENTRIES


class _Stopped(Exception):
    """The caller set `stop`: abandon the layer wherever the reader is."""


class _Budget:
    """Bytes and entries used so far by the image, checked against its limits."""

    def __init__(self, limits: UnpackLimits) -> None:
        self.limits = limits
        self.bytes = 0
        self.entries = 0


class _LayerStream:
    """Decompressed reader over a blob file that hashes what it yields and counts blob bytes.

    Every read also counts against the image's byte budget and honours `stop`, so neither a
    decompression bomb nor a single huge entry can outrun the limits or a cancellation.
    """

    def __init__(
        self,
        blob: BinaryIO,
        reference: str,
        layer: str,
        budget: _Budget,
        stop: threading.Event,
    ) -> None:
        self._reference = reference
        self._layer = layer
        self._blob = blob
        self._budget = budget
        self._stop = stop
        self.hasher = hashlib.sha256()
        # Decompressed bytes read from this layer, and the header guard's state.
        self.position = 0
        self.header_depth = 0
        self.header_start = 0
        self.global_header_bytes = 0
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
        """At most `size` bytes; never the whole rest (-1 reads one chunk)."""
        if self._stop.is_set():
            raise _Stopped
        if size < 0:
            size = COPY_CHUNK_BYTES
        try:
            data = self._inner.read(size)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise CorruptLayer(
                self._reference, layer=self._layer, detail=f"cannot decompress: {exc}"
            ) from exc
        self.position += len(data)
        if self.header_depth and self.position - self.header_start > MAX_ENTRY_HEADER_BYTES:
            raise self.corrupt(
                f"the headers of one entry take more than {MAX_ENTRY_HEADER_BYTES} bytes"
            )
        self._budget.bytes += len(data)
        if self._budget.bytes > self._budget.limits.max_bytes:
            raise LayerTooLarge(
                self._reference,
                layer=self._layer,
                detail="uncompressed size limit",
                limit=self._budget.limits.max_bytes,
                unit="bytes",
            )
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(COPY_CHUNK_BYTES):
            pass

    def corrupt(self, detail: str) -> CorruptLayer:
        return CorruptLayer(self._reference, layer=self._layer, detail=detail)

    def check_header(self, info: tarfile.TarInfo) -> None:
        """Refuse one header block before tarfile reads what it declares."""
        label = _EXTENDED_HEADERS.get(info.type)
        if label is not None:
            if info.size > MAX_HEADER_BYTES:
                raise self.corrupt(
                    f"{label} of {info.size} bytes (more than {MAX_HEADER_BYTES}) "
                    f"at byte {self.position} of the tar"
                )
            if info.type == tarfile.XGLTYPE:
                self.global_header_bytes += info.size
                if self.global_header_bytes > MAX_HEADER_BYTES:
                    raise self.corrupt(f"PAX global headers of more than {MAX_HEADER_BYTES} bytes")
        elif info.type == tarfile.GNUTYPE_SPARSE:
            raise SpecialFile(
                self._reference, layer=self._layer, entry=info.name, detail="GNU sparse file"
            )

    @contextlib.contextmanager
    def parsing_header(self) -> Iterator[None]:
        """Around tarfile's parse of one entry's header chain (it nests per extended header)."""
        if self.header_depth == 0:
            self.header_start = self.position
        self.header_depth += 1
        try:
            if self.header_depth > MAX_HEADER_CHAIN:
                raise self.corrupt(
                    f"more than {MAX_HEADER_CHAIN - 1} extended headers in front of one entry"
                )
            yield
        finally:
            self.header_depth -= 1


def _guarded_tarinfo(stream: _LayerStream) -> type[tarfile.TarInfo]:
    """A TarInfo class whose header parsing `stream` checks as tarfile goes.

    tarfile parses each header block with `frombuf` and each entry's chain of extended
    headers with nested `fromtarfile` calls (both public classmethods), so the checks see
    exactly the blocks tarfile takes for headers, with no second tar parser to disagree.
    """

    class GuardedTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
            info = super().frombuf(buf, encoding, errors)
            stream.check_header(info)
            return info

        @classmethod
        def fromtarfile(cls, tarfile: tarfile.TarFile) -> Self:
            with stream.parsing_header():
                return super().fromtarfile(tarfile)

    return GuardedTarInfo


class _DirMeta:
    """Mode and mtime to give a directory in finish(), and the same for its subdirectories.

    A tree rather than a dict of paths, so that removing a directory forgets everything
    recorded under it in one step.
    """

    __slots__ = ("children", "mode", "mtime_ns")

    def __init__(self, mode: int = DEFAULT_DIR_MODE, mtime_ns: int = 0) -> None:
        self.mode = mode
        self.mtime_ns = mtime_ns
        self.children: dict[str, _DirMeta] = {}


class _Unpacker:
    def __init__(
        self, reference: str, root: Path, stop: threading.Event, limits: UnpackLimits
    ) -> None:
        self.reference = reference
        self.stop = stop
        self.budget = _Budget(limits)
        self.root = str(root)
        self.preserve_owner = os.geteuid() == 0
        # Directory metadata applied in finish(), keyed by path components from the root.
        self.dir_meta = _DirMeta()
        self.layer = ""
        self.entry = ""
        self.touched: set[str] = set()

    def apply(self, layer: Layer, on_bytes: Callable[[int], None] | None) -> bool:
        """Apply one layer; False if stopped before the end."""
        self.layer = layer.digest
        self.touched = set()
        with open(layer.path, "rb") as blob:
            stream = _LayerStream(blob, self.reference, layer.digest, self.budget, self.stop)
            try:
                with tarfile.open(
                    fileobj=cast(IO[bytes], stream),
                    mode="r|",
                    encoding="utf-8",
                    errors="surrogateescape",
                    tarinfo=_guarded_tarinfo(stream),
                ) as tar:
                    while (member := tar.next()) is not None:
                        # A stream TarFile keeps every member it read (unbounded memory with
                        # many entries); nothing here needs them. Not in typeshed.
                        tar.members.clear()  # type: ignore[attr-defined]
                        self.entry = member.name
                        self._count_entry()
                        self._check_member(member)
                        self._apply_entry(tar, member)
                        if on_bytes is not None:
                            on_bytes(stream.blob_bytes_read)
                stream.drain()
            except _Stopped:
                return False
            except (ValueError, OverflowError) as exc:
                # Metadata the checks in _check_member did not foresee (xattr names, ...).
                raise CorruptLayer(
                    self.reference, layer=self.layer, detail=f"entry {self.entry!r}: {exc}"
                ) from exc
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

    def _check_member(self, member: tarfile.TarInfo) -> None:
        """Refuse metadata no filesystem call can take (PAX makes all of it free text)."""
        problem = None
        mtime = float(member.mtime)
        if "\0" in member.name or "\0" in member.linkname:
            problem = "a NUL byte in its name or link target"
        elif not math.isfinite(mtime) or not -MAX_MTIME_S <= mtime <= MAX_MTIME_S:
            problem = f"mtime {member.mtime!r} out of range"
        elif not (0 <= member.uid < MAX_ID and 0 <= member.gid < MAX_ID):
            problem = f"uid/gid {member.uid}/{member.gid} out of range"
        if problem is not None:
            raise CorruptLayer(
                self.reference, layer=self.layer, detail=f"entry {member.name!r} has {problem}"
            )

    def _count_entry(self) -> None:
        self.budget.entries += 1
        if self.budget.entries > self.budget.limits.max_entries:
            raise LayerTooLarge(
                self.reference,
                layer=self.layer,
                detail="entry count limit",
                limit=self.budget.limits.max_entries,
                unit="entries",
            )

    def finish(self) -> None:
        """Give every directory its recorded mode and mtime, children before their parent.

        Each directory is reached by a walk from the root that refuses symlinks on every
        component, so a path whose parent a later entry replaced with a symlink (even one to
        an absolute host path) is skipped, not followed.
        """
        pending: list[tuple[tuple[str, ...], _DirMeta, bool]] = [((), self.dir_meta, False)]
        while pending:
            parts, meta, expanded = pending.pop()
            if not expanded:
                pending.append((parts, meta, True))
                pending.extend(
                    ((*parts, name), child, False) for name, child in meta.children.items()
                )
                continue
            try:
                fd = self._open_dir(parts)
            except OSError:
                continue
            try:
                os.fchmod(fd, meta.mode)
                os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))
            except OSError:
                pass
            finally:
                os.close(fd)

    def _open_dir(self, parts: Sequence[str]) -> int:
        """An fd of the directory `parts` below the root, never following a symlink.

        Raises:
            OSError: A component is missing, a symlink (ELOOP) or not a directory.
        """
        fd = os.open(self.root, DIR_OPEN_FLAGS)
        try:
            for part in parts:
                child = os.open(part, DIR_OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _record_dir(self, parts: Sequence[str], mode: int, mtime_ns: int) -> None:
        node = self.dir_meta
        for part in parts:
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _DirMeta()
            node = child
        node.mode, node.mtime_ns = mode, mtime_ns

    def _forget_dir(self, parts: Sequence[str]) -> None:
        """Drop what was recorded at and under `parts` (removed, or no longer a directory)."""
        node: _DirMeta | None = self.dir_meta
        for part in parts[:-1]:
            node = node.children.get(part) if node is not None else None
        if node is not None and parts:
            node.children.pop(parts[-1], None)

    def _unsafe(self, detail: str) -> UnsafePath:
        return UnsafePath(self.reference, layer=self.layer, entry=self.entry, detail=detail)

    def _split(self, name: str, what: str) -> list[str]:
        if name.startswith("/"):
            raise self._unsafe(f"absolute {what}")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise self._unsafe(f"'..' in {what}")
        return parts

    def _resolve(self, parts: Sequence[str], *, create: bool) -> tuple[list[str], int] | None:
        """Real directory path (components below the root) of `parts` and an fd of it.

        Symlinks are followed as if chrooted into the root. The walk holds one directory fd at
        a time and opens each component with O_NOFOLLOW relative to its parent, so what it
        returns is a real directory inside the root. A missing directory is created when
        `create`, else the answer is None. The caller closes the fd.
        """
        resolved: list[str] = []
        pending = list(parts)
        hops = 0
        fd = os.open(self.root, DIR_OPEN_FLAGS)
        try:
            while pending:
                part = pending.pop(0)
                if part in ("", "."):
                    continue
                if part == "..":
                    if not resolved:
                        raise self._unsafe("a symlink on its path climbs above the image root")
                    resolved.pop()
                    fd = _swap_fd(fd, self._open_dir(resolved))
                    continue
                mode = self._step_mode(fd, resolved, part, create)
                if mode is None:
                    return None
                if stat.S_ISLNK(mode):
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise self._unsafe("too many levels of symlinks")
                    target = os.readlink(part, dir_fd=fd)
                    if target.startswith("/"):
                        resolved = []
                        fd = _swap_fd(fd, os.open(self.root, DIR_OPEN_FLAGS))
                    pending = target.split("/") + pending
                    continue
                if not stat.S_ISDIR(mode):
                    raise self._unsafe(f"parent {'/'.join([*resolved, part])} is not a directory")
                fd = _swap_fd(fd, os.open(part, DIR_OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=fd))
                resolved.append(part)
            result, fd = (resolved, fd), -1
            return result
        finally:
            if fd >= 0:
                os.close(fd)

    def _step_mode(self, fd: int, resolved: list[str], part: str, create: bool) -> int | None:
        """lstat of `part` in `fd`; a missing one is created as a directory when `create`."""
        if len(resolved) >= MAX_DEPTH:
            raise self._unsafe(f"deeper than {MAX_DEPTH} directories")
        try:
            return os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            if not create:
                return None
        os.mkdir(part, DEFAULT_DIR_MODE, dir_fd=fd)
        self._record_dir([*resolved, part], DEFAULT_DIR_MODE, 0)
        self._touch("/".join([*resolved, part]))
        return stat.S_IFDIR

    def _touch(self, rel: str) -> None:
        while rel and rel not in self.touched:
            self.touched.add(rel)
            rel = rel.rpartition("/")[0]

    def _remove(self, dir_fd: int, name: str, rel: str) -> None:
        """Remove `name` in the directory `dir_fd` (whose path is the parent of `rel`)."""
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        self._forget_dir(rel.split("/"))
        if stat.S_ISDIR(mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    def _clear_lower(self, dir_fd: int, rel: str) -> None:
        for child in os.listdir(dir_fd):
            child_rel = f"{rel}/{child}" if rel else child
            if child_rel not in self.touched:
                self._remove(dir_fd, child, child_rel)
                continue
            mode = os.stat(child, dir_fd=dir_fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                child_fd = os.open(child, DIR_OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    self._clear_lower(child_fd, child_rel)
                finally:
                    os.close(child_fd)

    def _apply_entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self._split(member.name, "path")
        if not parts:
            if member.isdir():
                self._record_dir((), stat.S_IMODE(member.mode), _mtime_ns(member))
            return
        if member.ischr() or member.isblk() or member.isfifo() or member.sparse is not None:
            kind = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device"}
            # Sparse members read back as their full size of zeros: a bomb in a few bytes.
            detail = "GNU sparse file" if member.sparse is not None else "fifo"
            raise SpecialFile(
                self.reference,
                layer=self.layer,
                entry=member.name,
                detail=kind.get(member.type, detail),
            )
        name = parts[-1]
        if name.startswith(WHITEOUT_PREFIX):
            whited = self._resolve(parts[:-1], create=False)
            if whited is not None:
                whited_parts, dir_fd = whited
                try:
                    self._whiteout(dir_fd, "/".join(whited_parts), name)
                finally:
                    os.close(dir_fd)
            return
        resolved = self._resolve(parts[:-1], create=True)
        assert resolved is not None  # create=True never answers None
        parent_parts, dir_fd = resolved
        try:
            rel = "/".join([*parent_parts, name])
            existing = _lstat_mode(dir_fd, name)
            merge = existing is not None and member.isdir() and stat.S_ISDIR(existing)
            if existing is not None and not merge:
                self._remove(dir_fd, name, rel)
            self._create(tar, member, dir_fd, [*parent_parts, name], merge=merge)
            self._touch(rel)
        finally:
            os.close(dir_fd)

    def _create(
        self,
        tar: tarfile.TarFile,
        member: tarfile.TarInfo,
        dir_fd: int,
        parts: list[str],
        merge: bool,
    ) -> None:
        """Create the entry `parts[-1]` in `dir_fd` and give it its metadata.

        Everything goes through `dir_fd` or an fd of the new inode; symlinks are never
        followed (lchown-style calls, O_NOFOLLOW opens).
        """
        name = parts[-1]
        if member.isdir():
            if not merge:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            self._record_dir(parts, stat.S_IMODE(member.mode), _mtime_ns(member))
            fd = os.open(name, DIR_OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                self._set_fd_metadata(fd, member)
            finally:
                os.close(fd)
        elif member.isreg():
            self._write_file(tar, member, dir_fd, name)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=dir_fd)
            if self.preserve_owner:
                os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
            # No f*xattr call takes a symlink; /proc/self/fd/N is the verified parent itself.
            _set_xattrs(f"/proc/self/fd/{dir_fd}/{name}", member)
            mtime = _mtime_ns(member)
            os.utime(name, ns=(mtime, mtime), dir_fd=dir_fd, follow_symlinks=False)
        elif member.islnk():
            self._hardlink(member, dir_fd, name)
        else:
            raise CorruptLayer(
                self.reference,
                layer=self.layer,
                detail=f"entry {member.name!r} has unsupported tar type {member.type!r}",
            )

    def _set_fd_metadata(self, fd: int, member: tarfile.TarInfo) -> None:
        """Owner, mode (files), xattrs and mtime (files) of the inode open as `fd`."""
        if self.preserve_owner:
            os.fchown(fd, member.uid, member.gid)
        if member.isreg():
            # After chown, which clears setuid/setgid bits.
            os.fchmod(fd, stat.S_IMODE(member.mode))
        _set_xattrs(fd, member)
        if not member.isdir():
            mtime = _mtime_ns(member)
            os.utime(fd, ns=(mtime, mtime))

    def _whiteout(self, dir_fd: int, parent: str, name: str) -> None:
        if name == OPAQUE_MARKER:
            self._clear_lower(dir_fd, parent)
            return
        if name.startswith(AUFS_META_PREFIX):
            return
        target = name[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise self._unsafe("whiteout of nothing")
        rel = f"{parent}/{target}" if parent else target
        if rel not in self.touched:
            self._remove(dir_fd, target, rel)

    def _write_file(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, dir_fd: int, name: str
    ) -> None:
        source = tar.extractfile(member)
        if source is None:
            raise CorruptLayer(
                self.reference, layer=self.layer, detail=f"no data for {member.name!r}"
            )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(name, flags, 0o600, dir_fd=dir_fd), "wb") as out:
            while chunk := source.read(COPY_CHUNK_BYTES):
                if self.stop.is_set():
                    raise _Stopped
                out.write(chunk)
            out.flush()
            self._set_fd_metadata(out.fileno(), member)

    def _hardlink(self, member: tarfile.TarInfo, dir_fd: int, name: str) -> None:
        target_parts = self._split(member.linkname, "hardlink target")
        if not target_parts:
            raise self._unsafe("hardlink to the image root")
        parent = self._resolve(target_parts[:-1], create=False)
        if parent is None:
            raise self._unsafe(f"hardlink target {member.linkname!r} does not exist")
        _, target_fd = parent
        try:
            mode = _lstat_mode(target_fd, target_parts[-1])
            if mode is None:
                raise self._unsafe(f"hardlink target {member.linkname!r} does not exist")
            if stat.S_ISDIR(mode):
                raise self._unsafe(f"hardlink target {member.linkname!r} is a directory")
            os.link(
                target_parts[-1],
                name,
                src_dir_fd=target_fd,
                dst_dir_fd=dir_fd,
                follow_symlinks=False,
            )
        finally:
            os.close(target_fd)


def _swap_fd(old: int, new: int) -> int:
    """Close `old`, return `new` (opened first, often relative to `old`)."""
    os.close(old)
    return new


def _lstat_mode(dir_fd: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return round(float(member.mtime) * 1_000_000_000)


def _set_xattrs(target: str | int, member: tarfile.TarInfo) -> None:
    """`SCHILY.xattr.*` onto an open fd, or onto a path whose last component is not followed."""
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            os.setxattr(
                target,
                key.removeprefix("SCHILY.xattr."),
                value.encode("utf-8", "surrogateescape"),
                # An fd is the inode itself; a path's last component must not be followed.
                follow_symlinks=isinstance(target, int),
            )


def unpack_layers(
    reference: str,
    root: Path,
    layers: Sequence[Layer],
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    *,
    limits: UnpackLimits | None = None,
) -> None:
    """Apply `layers` in order into the empty directory `root`.

    Blocking (run it in a thread). `on_progress(layer_index, blob_bytes_done)` is called from
    this thread as each entry is applied. Setting `stop` makes it return early (within one
    read of at most COPY_CHUNK_BYTES, even inside a large entry), leaving a partial tree for
    the caller to remove. `limits` defaults to `UnpackLimits()`.

    Raises:
        CorruptLayer: Undecodable compression or tar, or an uncompressed sha256 other than the
            layer's diff_id.
        UnsafePath: An entry or hardlink target outside the root, or a path through a symlink
            that climbs above it.
        SpecialFile: A device node, fifo or GNU sparse file.
        LayerTooLarge: The layers together exceed `limits` (bytes or entries).
        UnpackFailed: The filesystem under `root` refused a write.
    """
    unpacker = _Unpacker(reference, root, stop or threading.Event(), limits or UnpackLimits())
    for index, layer in enumerate(layers):
        callback = None
        if on_progress is not None:

            def callback(done: int, index: int = index) -> None:
                on_progress(index, done)

        if not unpacker.apply(layer, callback):
            return
    unpacker.finish()
