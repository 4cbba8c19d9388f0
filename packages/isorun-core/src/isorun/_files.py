"""`sb.files`: the guest's filesystem (spec/api.md "Files"), sync `Files` and async `AsyncFiles`.

Transfers stream both ways. An upload from a file object or an iterator goes out as a chunked
request body, read as httpx sends it (never whole in memory); `download` writes the answer's
chunks to a local file as they arrive. All guest paths are absolute.

Errors common to every method: `SandboxNotFound` (the sandbox is gone), `SandboxStateError`
(it is not running), `FileError` (the guest refused: `detail` names its error code),
`TransportError`.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Protocol, runtime_checkable

from isorun import _routes
from isorun._base import parse_model
from isorun._client import AsyncClient, Client
from isorun._errors import NotFound, SandboxNotFound
from isorun._models import FileStat, WriteResult

CHUNK_BYTES = 64 * 1024


@runtime_checkable
class Readable(Protocol):
    """A file object open for reading, binary (or text, sent as UTF-8)."""

    def read(self, size: int = -1, /) -> bytes | str:
        """Return up to `size` bytes (or characters); empty at the end."""
        ...


FileData = bytes | str | Readable | Iterable[bytes]
"""What `Files.write` sends: bytes, text (as UTF-8), a file object, or an iterator of chunks."""
AsyncFileData = FileData | AsyncIterable[bytes]
"""What `AsyncFiles.write` sends: the same, or an async iterator of chunks."""


def _as_bytes(chunk: bytes | str) -> bytes:
    return chunk.encode() if isinstance(chunk, str) else chunk


def _read_chunks(source: Readable) -> Iterator[bytes]:
    while chunk := source.read(CHUNK_BYTES):
        yield _as_bytes(chunk)


def upload_content(data: FileData) -> bytes | Iterator[bytes]:
    """The request body for `data`: bytes as they are, anything else as a lazy iterator."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, Readable):
        return _read_chunks(data)
    return (_as_bytes(chunk) for chunk in data)


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def async_upload_content(data: AsyncFileData) -> bytes | AsyncIterator[bytes]:
    """`upload_content` for an async client, which needs an async iterator for a stream.

    A sync file object or iterator is read on the event loop's thread, chunk by chunk.
    """
    if isinstance(data, AsyncIterable):
        return aiter(data)
    content = upload_content(data)
    return content if isinstance(content, bytes) else _aiter(content)


class Files:
    """The filesystem of one sandbox, through a `Client`. Reached as `sb.files`."""

    def __init__(self, client: Client, sandbox_id: str) -> None:
        self._client = client
        self._sandbox_id = sandbox_id

    def read(self, path: str) -> bytes:
        """Return the whole content of the file at `path`.

        Raises:
            NotFound: No such file.
        """
        return self._client.send(_routes.read_file(self._sandbox_id, path)).content

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Return the file at `path` decoded as text.

        Raises:
            NotFound: No such file.
            UnicodeDecodeError: The content is not valid in `encoding` (with errors="strict").
        """
        return self.read(path).decode(encoding, errors)

    def download(self, path: str, dest: str | os.PathLike[str]) -> int:
        """Stream the file at `path` into the local file `dest`, chunk by chunk.

        `dest` is created (or truncated) only once the guest has answered.

        Returns:
            The number of bytes written.

        Raises:
            NotFound: No such file in the guest.
            OSError: `dest` could not be written.
        """
        size = 0
        req = _routes.read_file(self._sandbox_id, path)
        with self._client.stream(req) as response, open(dest, "wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
                size += len(chunk)
        return size

    def write(
        self, path: str, data: FileData, *, mode: int = 0o644, parents: bool = False
    ) -> WriteResult:
        """Write `data` to the file at `path`, replacing it. Never retried.

        Args:
            path: Absolute guest path.
            data: Bytes, text (sent as UTF-8), a file object or an iterator of byte chunks;
                the last two are streamed as they are read.
            mode: Permission bits of the file.
            parents: Create missing parent directories.

        Returns:
            Where the file went and how many bytes the guest wrote.

        Raises:
            NotFound: A parent directory is missing and `parents` is false (or `FileError`,
                as the guest reports it).
            OutcomeUnknown: The answer was lost after sending began.
        """
        req = _routes.write_file(
            self._sandbox_id, path, upload_content(data), mode=mode, parents=parents
        )
        return parse_model(WriteResult, self._client.send(req))

    def list(self, path: str) -> builtins.list[FileStat]:
        """Return the entries of the directory at `path`.

        Raises:
            NotFound: No such directory.
        """
        return builtins.list(
            self._client.paginate(_routes.list_files(self._sandbox_id, path), FileStat)
        )

    def stat(self, path: str) -> FileStat:
        """Return the metadata of `path` (a symlink itself, not its target).

        Raises:
            NotFound: No such path.
        """
        return parse_model(FileStat, self._client.send(_routes.stat_file(self._sandbox_id, path)))

    def exists(self, path: str) -> bool:
        """Return whether `path` exists.

        Raises:
            SandboxNotFound: The sandbox itself is gone (not a missing path).
        """
        try:
            self.stat(path)
        except SandboxNotFound:
            raise
        except NotFound:
            return False
        return True

    def mkdir(self, path: str, *, parents: bool = True) -> None:
        """Create the directory `path` (and, with `parents`, its missing parents).

        Raises:
            FileError: It exists already (without `parents`) or a parent is not a directory.
        """
        self._client.send(_routes.make_dir(self._sandbox_id, path, parents=parents))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove the file or directory `path`; a non-empty directory needs `recursive`.

        Raises:
            NotFound: No such path.
            FileError: A non-empty directory without `recursive`.
        """
        self._client.send(_routes.remove_file(self._sandbox_id, path, recursive=recursive))

    def rename(self, src: str, dst: str) -> None:
        """Move `src` to `dst`, replacing a file there.

        Raises:
            NotFound: `src` does not exist.
        """
        self._client.send(_routes.rename_file(self._sandbox_id, src, dst))


class AsyncFiles:
    """The filesystem of one sandbox, through an `AsyncClient`; twin of `Files`."""

    def __init__(self, client: AsyncClient, sandbox_id: str) -> None:
        self._client = client
        self._sandbox_id = sandbox_id

    async def read(self, path: str) -> bytes:
        """Return the whole content of the file at `path`.

        Raises:
            NotFound: No such file.
        """
        return (await self._client.send(_routes.read_file(self._sandbox_id, path))).content

    async def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Return the file at `path` decoded as text.

        Raises:
            NotFound: No such file.
            UnicodeDecodeError: The content is not valid in `encoding` (with errors="strict").
        """
        return (await self.read(path)).decode(encoding, errors)

    async def download(self, path: str, dest: str | os.PathLike[str]) -> int:
        """Stream the file at `path` into the local file `dest`, chunk by chunk.

        The local writes happen on the event loop's thread.

        Returns:
            The number of bytes written.

        Raises:
            NotFound: No such file in the guest.
            OSError: `dest` could not be written.
        """
        size = 0
        req = _routes.read_file(self._sandbox_id, path)
        async with self._client.stream(req) as response:
            with open(dest, "wb") as out:  # noqa: ASYNC230 - local chunk writes, documented
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        return size

    async def write(
        self, path: str, data: AsyncFileData, *, mode: int = 0o644, parents: bool = False
    ) -> WriteResult:
        """Write `data` to the file at `path`, replacing it. Never retried.

        Args:
            path: Absolute guest path.
            data: As for `Files.write`, or an async iterator of byte chunks.
            mode: Permission bits of the file.
            parents: Create missing parent directories.

        Returns:
            Where the file went and how many bytes the guest wrote.

        Raises:
            NotFound: A parent directory is missing and `parents` is false (or `FileError`,
                as the guest reports it).
            OutcomeUnknown: The answer was lost after sending began.
        """
        req = _routes.write_file(
            self._sandbox_id, path, async_upload_content(data), mode=mode, parents=parents
        )
        return parse_model(WriteResult, await self._client.send(req))

    async def list(self, path: str) -> builtins.list[FileStat]:
        """Return the entries of the directory at `path`.

        Raises:
            NotFound: No such directory.
        """
        req = _routes.list_files(self._sandbox_id, path)
        return [entry async for entry in self._client.paginate(req, FileStat)]

    async def stat(self, path: str) -> FileStat:
        """Return the metadata of `path` (a symlink itself, not its target).

        Raises:
            NotFound: No such path.
        """
        req = _routes.stat_file(self._sandbox_id, path)
        return parse_model(FileStat, await self._client.send(req))

    async def exists(self, path: str) -> bool:
        """Return whether `path` exists.

        Raises:
            SandboxNotFound: The sandbox itself is gone (not a missing path).
        """
        try:
            await self.stat(path)
        except SandboxNotFound:
            raise
        except NotFound:
            return False
        return True

    async def mkdir(self, path: str, *, parents: bool = True) -> None:
        """Create the directory `path` (and, with `parents`, its missing parents).

        Raises:
            FileError: It exists already (without `parents`) or a parent is not a directory.
        """
        await self._client.send(_routes.make_dir(self._sandbox_id, path, parents=parents))

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove the file or directory `path`; a non-empty directory needs `recursive`.

        Raises:
            NotFound: No such path.
            FileError: A non-empty directory without `recursive`.
        """
        await self._client.send(_routes.remove_file(self._sandbox_id, path, recursive=recursive))

    async def rename(self, src: str, dst: str) -> None:
        """Move `src` to `dst`, replacing a file there.

        Raises:
            NotFound: `src` does not exist.
        """
        await self._client.send(_routes.rename_file(self._sandbox_id, src, dst))
