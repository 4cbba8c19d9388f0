"""The image store: reference in, read-only erofs disk out, cached by layer ChainID.

```
pull("python:3.12")
  resolve   GET manifest by tag (one request, every pull) or by digest (from the blob store
            when present); an index picks linux/amd64; config blob -> diff_ids -> ChainID
  hit?      disks/<chainid>.erofs exists -> done (no layer fetch, unpack or mkfs)
  fetch     layer blobs -> blobs/sha256/<hex>, verified, up to FETCH_CONCURRENCY at a time
  unpack    layers in order into <scratch>/isorun-unpack-*/rootfs (a thread; tmpfs is 4-6x faster)
  disk      mkfs.erofs -> tmp/disk-*.erofs, sidecar JSON, then rename into disks/
```

Cache layout under `root` (one `ImageStore` per root and per scratch directory: leftovers of
a crash in `tmp/`, and `isorun-unpack-*` in the scratch directory, are removed when it opens):

```
blobs/sha256/<hex>              manifests, configs and layers, each verified before its rename
disks/<chainid hex>.erofs       the disk; its presence is the cache hit
disks/<chainid hex>.json        sidecar: pinned ref, manifest digest, image config, builder
tmp/                            downloads and disks being built (same filesystem: atomic renames)
```

The disk's content depends only on the layers, so images that share layers but differ in config
share a disk; `ImageDisk.config` always comes from the image being pulled, and the sidecar
records the image that built the disk.

Work is shared, never repeated: a disk build is keyed by ChainID and a blob fetch by digest. The
first caller starts the job as a task; later callers await the same task (shielded, so one
caller's cancellation does not cancel the others) and also receive its progress. Temporary files
and unpack directories are removed in `finally` blocks, so an error leaves nothing partial; an
unpack tree is removed with `remove_tree`, which also gets through the read-only directories
an image leaves when hostd is not root.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict

from isorun_hostd.images.auth import RegistryAuth, RegistryCredentials
from isorun_hostd.images.blobs import MAX_DOCUMENT_BYTES, BlobStore
from isorun_hostd.images.disk import MKFS_ARGS, build_erofs
from isorun_hostd.images.errors import (
    ContentTooLarge,
    ImageError,
    RegistryProtocolError,
)
from isorun_hostd.images.manifest import (
    CONFIG_TYPES,
    IMAGE_TYPES,
    INDEX_TYPES,
    LAYER_TYPES,
    ConfigFile,
    Descriptor,
    Index,
    Manifest,
    chain_id,
    check_media_type,
    media_type_of,
    parse_document,
    select_platform,
)
from isorun_hostd.images.reference import Reference
from isorun_hostd.images.registry import RegistryClient, new_http_client, registry_base_url
from isorun_hostd.images.unpack import Layer, UnpackLimits, unpack_layers

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = 1
FETCH_CONCURRENCY = 3
# Resolutions kept for reuse (ImageStore.tag_ttl_s); a few hundred references at most.
MAX_REMEMBERED_RESOLUTIONS = 256
TMP_PREFIXES = ("blob-", "doc-", "disk-")
# Unique enough for a shared tmpfs such as /dev/shm, where only our own entries may be removed.
UNPACK_PREFIX = "isorun-unpack-"

PullPhase = Literal["resolve", "fetch", "unpack", "disk"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class PullProgress:
    """One progress report of a pull.

    Attributes:
        reference: The reference as given to `pull`.
        phase: resolve, fetch, unpack or disk.
        layer_index: Index of the layer (fetch, unpack), else None.
        layer_count: Number of layers (0 while resolving).
        bytes_done: Blob bytes fetched or consumed by the unpacker; disk size once built.
        bytes_total: Blob size for fetch and unpack, 0 when unknown.
    """

    reference: str
    phase: PullPhase
    layer_index: int | None
    layer_count: int
    bytes_done: int
    bytes_total: int


ProgressCallback = Callable[[PullProgress], None]


class ImageConfig(BaseModel):
    """What the guest needs from the image config to run a process."""

    model_config = ConfigDict(frozen=True)

    env: list[str]
    entrypoint: list[str] | None
    cmd: list[str] | None
    working_dir: str
    user: str


class ImageDisk(BaseModel):
    """A pulled image: the read-only erofs disk and how to run it.

    Attributes:
        reference: The reference as given.
        pinned: `registry/repository@sha256:...` of the top-level manifest or index.
        manifest_digest: The digest in `pinned` (the index's, for multi-platform images).
        chain_id: ChainID of the layer stack; names the disk.
        disk_path: The erofs image, read-only by convention; shared by every sandbox.
        size_bytes: Size of the disk file.
        config: Env, entrypoint, cmd, working dir and user of the image.
    """

    model_config = ConfigDict(frozen=True)

    reference: str
    pinned: str
    manifest_digest: str
    chain_id: str
    disk_path: Path
    size_bytes: int
    config: ImageConfig


@dataclass(frozen=True)
class _Resolved:
    reference: Reference
    manifest_digest: str
    manifest: Manifest
    config: ConfigFile
    chain_id: str

    @property
    def image_config(self) -> ImageConfig:
        runtime = self.config.config
        if runtime is None:
            return ImageConfig(env=[], entrypoint=None, cmd=None, working_dir="", user="")
        return ImageConfig(
            env=list(runtime.env or []),
            entrypoint=runtime.entrypoint,
            cmd=runtime.cmd,
            working_dir=runtime.working_dir,
            user=runtime.user,
        )


class _Job:
    """A shared unit of work and the progress callbacks of everyone waiting on it."""

    task: asyncio.Task[Any]

    def __init__(self) -> None:
        self.listeners: list[ProgressCallback] = []

    def emit(self, progress: PullProgress) -> None:
        for listener in list(self.listeners):
            _notify(listener, progress)


def _notify(callback: ProgressCallback | None, progress: PullProgress) -> None:
    if callback is None:
        return
    try:
        callback(progress)
    except Exception:
        # A broken progress consumer must not fail a pull others may be waiting on.
        logger.exception("progress callback failed for %s", progress.reference)


class ImageStore:
    """Pulls OCI images into cached read-only erofs disks.

    Args:
        root: Cache directory (created if missing).
        credentials: Per registry, as written in references (`docker.io`, `ghcr.io`,
            `127.0.0.1:5000`); registries not named are pulled anonymously.
        insecure_registries: `host` or `host:port` entries allowed over plain HTTP besides
            loopback ones. Everything else must be HTTPS.
        scratch_dir: Where layers are unpacked before mkfs; a tmpfs such as /dev/shm is much
            faster. Defaults to `root/tmp`.
        transport: httpx transport for registry traffic (tests); default is a fresh one per pull.
        unpack_limits: What one image may unpack to (bytes, entries); default `UnpackLimits()`.
        tag_ttl_s: How long a tag's resolution is reused before the registry is asked again
            (0: every pull asks). A digest's is reused for as long as the process runs: it
            cannot change.
    """

    def __init__(
        self,
        root: Path,
        *,
        credentials: Mapping[str, RegistryCredentials] | None = None,
        insecure_registries: Collection[str] = (),
        scratch_dir: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        unpack_limits: UnpackLimits | None = None,
        tag_ttl_s: float = 0.0,
    ) -> None:
        self.root = root
        self.tag_ttl_s = tag_ttl_s
        # reference text -> (monotonic time resolved, resolution); bounded, oldest dropped.
        self._resolutions: dict[str, tuple[float, _Resolved]] = {}
        self.unpack_limits = unpack_limits or UnpackLimits()
        self.tmp = root / "tmp"
        self.disks = root / "disks"
        self.scratch = scratch_dir or self.tmp
        for directory in (root / "blobs", self.tmp, self.disks, self.scratch):
            directory.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(self.tmp, (*TMP_PREFIXES, UNPACK_PREFIX))
        _remove_leftovers(self.scratch, (UNPACK_PREFIX,))
        self.blobs = BlobStore(root / "blobs", self.tmp)
        self._credentials = dict(credentials or {})
        self._insecure = frozenset(insecure_registries)
        self._transport = transport
        self._auth: dict[str, RegistryAuth] = {}
        # Jobs in flight, keyed "disk:<chainid>" or "blob:<digest>"; only touched on the loop.
        self._jobs: dict[str, _Job] = {}

    async def pull(self, reference: str, *, progress: ProgressCallback | None = None) -> ImageDisk:
        """Resolve `reference`, then fetch, verify, unpack and build its disk unless cached.

        Tags are resolved on every pull (one manifest request); a digest whose manifest is
        already stored needs no request before a cache hit.

        Args:
            reference: An image reference (`python:3.12`, `ghcr.io/o/r@sha256:...`).
            progress: Called on the event loop with reports for each phase and layer.

        Returns:
            The disk and the image config.

        Raises:
            InvalidReference: Not a reference.
            InsecureRegistry: Plain HTTP to a non-loopback host that is not configured insecure.
            RegistryUnreachable: Connection refused, DNS failure or timeout (retryable).
            AuthenticationFailed: 401/403, missing or bad credentials, token flow refused.
            ManifestUnknown, BlobUnknown: Wrong tag or digest; a blob missing on the registry.
            DigestMismatch, ContentTooLarge: Content that does not match its digest or size.
            UnsupportedMediaType, PlatformNotFound: Schema 1, foreign layers, no linux/amd64.
            CorruptLayer, UnsafePath, SpecialFile, UnpackFailed: A layer that cannot be
                applied safely.
            LayerTooLarge: The image unpacks past `unpack_limits`.
            DiskBuildError: mkfs.erofs failed.
            RegistryProtocolError: Any other unusable registry answer.
        """
        parsed = Reference.parse(reference)
        _notify(progress, PullProgress(reference, "resolve", None, 0, 0, 0))
        resolved = self._recent(reference, parsed)
        if resolved is None:
            async with self._registry(reference, parsed) as registry:
                resolved = await self._resolve(reference, parsed, registry)
            self._remember(reference, resolved)
        disk_path = self.disks / f"{_hex(resolved.chain_id)}.erofs"
        if not disk_path.exists():
            await self._shared(
                f"disk:{resolved.chain_id}",
                lambda emit: self._build(reference, resolved, disk_path, emit),
                progress,
            )
        return ImageDisk(
            reference=reference,
            pinned=str(parsed.with_digest(resolved.manifest_digest)),
            manifest_digest=resolved.manifest_digest,
            chain_id=resolved.chain_id,
            disk_path=disk_path,
            size_bytes=disk_path.stat().st_size,
            config=resolved.image_config,
        )

    def _recent(self, reference: str, parsed: Reference) -> _Resolved | None:
        """A resolution of ``reference`` that may be reused: a digest's, or a tag's younger
        than ``tag_ttl_s``. Saves a manifest round trip (and a TLS handshake) per create."""
        hit = self._resolutions.get(reference)
        if hit is None:
            return None
        resolved_at, resolved = hit
        if parsed.digest is None and time.monotonic() - resolved_at >= self.tag_ttl_s:
            return None
        return resolved

    def _remember(self, reference: str, resolved: _Resolved) -> None:
        self._resolutions.pop(reference, None)
        self._resolutions[reference] = (time.monotonic(), resolved)
        while len(self._resolutions) > MAX_REMEMBERED_RESOLUTIONS:
            del self._resolutions[next(iter(self._resolutions))]

    @contextlib.asynccontextmanager
    async def _registry(self, text: str, parsed: Reference) -> AsyncIterator[RegistryClient]:
        auth = self._auth.get(parsed.registry)
        if auth is None:
            credentials = self._credentials.get(parsed.registry) or self._credentials.get(
                parsed.api_host
            )
            auth = self._auth[parsed.registry] = RegistryAuth(parsed.registry, credentials)
        http = new_http_client(text, self._insecure, self._transport, parsed.api_host)
        try:
            yield RegistryClient(
                parsed, text, http, auth, registry_base_url(parsed, self._insecure)
            )
        finally:
            # A caller-supplied transport outlives the pull; closing the client would close it.
            if self._transport is None:
                await http.aclose()

    async def _resolve(self, text: str, parsed: Reference, registry: RegistryClient) -> _Resolved:
        top_digest, top_body, top_type = await self._manifest(text, registry, parsed.target)
        body, media_type = top_body, top_type
        if media_type in INDEX_TYPES:
            index = parse_document(Index, body, text, parsed.registry, "index")
            entry = select_platform(index, text)
            _, body, media_type = await self._manifest(text, registry, entry.digest)
        check_media_type(media_type, IMAGE_TYPES, "image manifest", text)
        manifest = parse_document(Manifest, body, text, parsed.registry, "manifest")
        check_media_type(manifest.config.media_type, CONFIG_TYPES, "image config", text)
        for layer in manifest.layers:
            check_media_type(layer.media_type, LAYER_TYPES, f"layer {layer.digest}", text)
        config_body = await self._document(text, registry, manifest.config, "image config")
        config = parse_document(ConfigFile, config_body, text, parsed.registry, "image config")
        if len(config.rootfs.diff_ids) != len(manifest.layers):
            raise RegistryProtocolError(
                text,
                registry=parsed.registry,
                detail=f"config has {len(config.rootfs.diff_ids)} diff_ids for "
                f"{len(manifest.layers)} layers",
            )
        return _Resolved(
            reference=parsed,
            manifest_digest=top_digest,
            manifest=manifest,
            config=config,
            chain_id=chain_id(config.rootfs.diff_ids, text),
        )

    async def _manifest(
        self, text: str, registry: RegistryClient, target: str
    ) -> tuple[str, bytes, str]:
        if target.startswith("sha256:"):
            stored = self.blobs.read_document(target)
            if stored is not None:
                return target, stored, media_type_of(stored, None, text)
        fetched = await registry.manifest(target)
        self.blobs.put_document(fetched.digest, fetched.body)
        return fetched.digest, fetched.body, media_type_of(fetched.body, fetched.media_type, text)

    async def _document(
        self, text: str, registry: RegistryClient, descriptor: Descriptor, what: str
    ) -> bytes:
        if descriptor.size > MAX_DOCUMENT_BYTES:
            raise ContentTooLarge(text, what=what, limit_bytes=MAX_DOCUMENT_BYTES)
        stored = self.blobs.read_document(descriptor.digest)
        if stored is None:
            await self._fetch_blob(registry, descriptor, None)
            stored = self.blobs.read_document(descriptor.digest)
        if stored is None:
            raise ImageError(text, detail=f"{what} {descriptor.digest} vanished from the cache")
        return stored

    async def _fetch_blob(
        self,
        registry: RegistryClient,
        descriptor: Descriptor,
        progress: Callable[[int], None] | None,
    ) -> Path:
        if self.blobs.has(descriptor.digest):
            if progress is not None:
                progress(descriptor.size)
            return self.blobs.path(descriptor.digest)

        async def fetch(_emit: ProgressCallback) -> Path:
            return await registry.blob(self.blobs, descriptor.digest, descriptor.size, progress)

        return await self._shared(f"blob:{descriptor.digest}", fetch, None)

    async def _build(
        self, text: str, resolved: _Resolved, disk_path: Path, emit: ProgressCallback
    ) -> None:
        if disk_path.exists():
            return
        layers = resolved.manifest.layers
        count = len(layers)
        async with self._registry(text, resolved.reference) as registry:
            paths = await self._fetch_layers(text, registry, layers, emit)
        unpack_dir = Path(tempfile.mkdtemp(prefix=UNPACK_PREFIX, dir=self.scratch))
        disk_tmp = self.tmp / f"disk-{uuid.uuid4().hex}.erofs"
        try:
            rootfs = unpack_dir / "rootfs"
            rootfs.mkdir()
            stack = [
                Layer(descriptor.digest, path, diff_id, descriptor.size)
                for descriptor, path, diff_id in zip(
                    layers, paths, resolved.config.rootfs.diff_ids, strict=True
                )
            ]
            await self._unpack(text, rootfs, stack, emit)
            emit(PullProgress(text, "disk", None, count, 0, 0))
            await build_erofs(text, rootfs, disk_tmp)
            self._write_sidecar(text, resolved, disk_path)
            os.replace(disk_tmp, disk_path)
            emit(PullProgress(text, "disk", None, count, disk_path.stat().st_size, 0))
        finally:
            remove_tree(unpack_dir)
            disk_tmp.unlink(missing_ok=True)

    async def _fetch_layers(
        self,
        text: str,
        registry: RegistryClient,
        layers: list[Descriptor],
        emit: ProgressCallback,
    ) -> list[Path]:
        limit = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(index: int, descriptor: Descriptor) -> Path:
            def report(done: int) -> None:
                emit(PullProgress(text, "fetch", index, len(layers), done, descriptor.size))

            async with limit:
                report(0)
                return await self._fetch_blob(registry, descriptor, report)

        # Every fetch settles before the first error is raised, so a failed pull has nothing
        # still writing into tmp/ when its caller looks.
        results = await asyncio.gather(
            *(one(index, layer) for index, layer in enumerate(layers)), return_exceptions=True
        )
        paths: list[Path] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            paths.append(result)
        return paths

    async def _unpack(
        self, text: str, rootfs: Path, stack: list[Layer], emit: ProgressCallback
    ) -> None:
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def report(index: int, done: int) -> None:
            progress = PullProgress(text, "unpack", index, len(stack), done, stack[index].size)
            loop.call_soon_threadsafe(emit, progress)

        unpack = functools.partial(
            unpack_layers, text, rootfs, stack, report, stop, limits=self.unpack_limits
        )
        work = loop.run_in_executor(None, unpack)
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            # The thread must stop writing before the caller's finally removes its directory.
            stop.set()
            with contextlib.suppress(Exception):
                await work
            raise

    def _write_sidecar(self, text: str, resolved: _Resolved, disk_path: Path) -> None:
        sidecar = {
            "format": SIDECAR_FORMAT,
            "reference": text,
            "pinned": str(resolved.reference.with_digest(resolved.manifest_digest)),
            "manifest_digest": resolved.manifest_digest,
            "chain_id": resolved.chain_id,
            "config": resolved.image_config.model_dump(mode="json"),
            "builder": " ".join(("mkfs.erofs", *MKFS_ARGS)),
        }
        fd, name = tempfile.mkstemp(prefix="doc-", dir=self.tmp)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(sidecar, out, indent=2)
            os.replace(name, disk_path.with_suffix(".json"))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    async def _shared(
        self,
        key: str,
        factory: Callable[[ProgressCallback], Awaitable[_T]],
        progress: ProgressCallback | None,
    ) -> _T:
        job = self._jobs.get(key)
        if job is None:
            job = _Job()
            job.task = asyncio.create_task(self._bg_run_job(key, job, factory))
            self._jobs[key] = job
        if progress is not None:
            job.listeners.append(progress)
        try:
            result: _T = await asyncio.shield(job.task)
            return result
        finally:
            if progress is not None:
                job.listeners.remove(progress)

    async def _bg_run_job(
        self, key: str, job: _Job, factory: Callable[[ProgressCallback], Awaitable[_T]]
    ) -> _T:
        # Runs as a task that outlives any one waiter; its errors reach every waiter.
        try:
            return await factory(job.emit)
        finally:
            self._jobs.pop(key, None)


def _hex(digest: str) -> str:
    return digest.partition(":")[2]


def _remove_leftovers(directory: Path, prefixes: tuple[str, ...]) -> None:
    for entry in directory.iterdir():
        if entry.name.startswith(prefixes):
            if entry.is_dir() and not entry.is_symlink():
                remove_tree(entry)
            else:
                entry.unlink(missing_ok=True)


def remove_tree(path: Path) -> None:
    """`shutil.rmtree(path, ignore_errors=True)` that also gets through unwritable directories.

    When hostd is not root, an unpacked image keeps the modes its layers ask for (0555 /usr,
    0500 /root, ...), and rmtree cannot unlink what such a directory holds. A permission error
    makes the directory and its parent u+rwx (each at most once, so a failure that chmod cannot
    fix is given up, not retried forever) and retries the removal. Never raises.
    """
    fixed: set[str] = set()

    def retry(failed: str, error: BaseException) -> None:
        if not isinstance(error, PermissionError):
            return
        changed = False
        for directory in (os.path.dirname(failed), failed):
            if directory not in fixed and _add_owner_rwx(directory):
                fixed.add(directory)
                changed = True
        if not changed:
            return
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(failed).st_mode):
                remove(failed)
            else:
                os.unlink(failed)

    def remove(target: str | Path) -> None:
        if sys.version_info >= (3, 12):
            shutil.rmtree(target, onexc=lambda _func, failed, error: retry(failed, error))
        else:
            shutil.rmtree(target, onerror=lambda _func, failed, info: retry(failed, info[1]))

    remove(path)


def _add_owner_rwx(path: str) -> bool:
    """chmod u+rwx a real directory that lacks it; True if its mode changed."""
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISDIR(mode) or mode & stat.S_IRWXU == stat.S_IRWXU:
            return False
        os.chmod(path, stat.S_IMODE(mode) | stat.S_IRWXU)
    except OSError:
        return False
    return True
