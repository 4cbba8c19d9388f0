"""One node's audit chain: the key, appends, reads and verification (format: record.py).

```
AuditChain.open()    key (made once, 0600) ─► chain header if new (refused: a chain whose key
                     is gone or another)
AuditChain.record()  flock(chain) ─► head file (or the chain's last line) ─► one write() of
                     entry seq+1 ─► head rewritten in place (one pwrite) ─► unlock
AuditChain.verify()  head and chain size read under the lock ─► record.py's rules up to that
                     size, plus: the chain must still hold what this process wrote
```
Writers: every Runtime on a state folder appends to the same chain (tests and a restarted
hostd run two at once), so each append takes an exclusive ``flock`` on the chain file and reads
the head from disk; a ``threading.Lock`` orders the threads of one process, which share the
file description and so are not kept apart by ``flock``. An append holds both for two short
writes (about 80 us in all).

Durability: each entry is one ``write()`` on an O_APPEND descriptor, so it is in the kernel when
``record`` returns and survives a crash of hostd; neither file is fsynced (entries come per DNS
query and per exec, and an fsync would stall the event loop for milliseconds each). After a
power loss the newest entries may be missing; the head may then name one the chain lacks, and
``verify`` reports the tail as truncated, which is what happened.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from isorun_hostd.audit.errors import AuditError, AuditKeyError
from isorun_hostd.audit.record import (
    KEY_BYTES,
    MAX_LINE_BYTES,
    Entry,
    Head,
    canonical,
    genesis_mac,
    head_is_sealed,
    header,
    key_id,
    make_entry,
    make_head,
    parse_entry,
    parse_head,
    parse_line,
)
from isorun_hostd.audit.verify import Report, verify

log = logging.getLogger(__name__)

CHAIN_FILE = "chain.jsonl"
HEAD_FILE = "head"
KEY_FILE = "key"
MAX_PAGE = 1000
# The head file's fixed size: its JSON (~170 bytes) padded with spaces.
HEAD_BYTES = 256


def load_key(path: Path, *, create: bool) -> bytes:
    """The key in ``path``; with ``create``, made first if there is none.

    Raises:
        AuditKeyError: the file is missing (without ``create``), is not KEY_BYTES long, or
            can be read by group or others.
    """
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written whole under another name, then linked: a second runtime starting at the same
        # moment either wins the link or reads a complete key, never half of one.
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(partial, path)
        except FileExistsError:
            pass
        finally:
            partial.unlink()
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except FileNotFoundError:
        raise AuditKeyError(
            f"audit key {path}: no such file; it is made by the first hostd start on this "
            "state folder, or pass the right one (--key, ISORUN_AUDIT_KEY_FILE)"
        ) from None
    if mode & 0o077:
        raise AuditKeyError(
            f"audit key {path}: readable by others (mode {mode & 0o777:o}); chmod 600 it"
        )
    if len(key) != KEY_BYTES:
        raise AuditKeyError(f"audit key {path}: {len(key)} bytes, not {KEY_BYTES}")
    return key


def read_head(path: Path) -> Head | None:
    """The head file, or None if there is none or it cannot be parsed."""
    try:
        return parse_head(path.read_bytes()[: MAX_LINE_BYTES + 1])
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("audit head %s is unreadable", path)
        return None


def verify_folder(folder: Path, key: bytes) -> Report:
    """Verify the chain in ``folder`` from outside the hostd that writes it (which may be
    running): the head and the chain's size are read together under a shared lock. Blocking.

    Raises:
        OSError: the chain exists but cannot be read.
    """
    chain = folder / CHAIN_FILE
    try:
        f = chain.open("rb")
    except FileNotFoundError:
        return verify(chain, key, read_head(folder / HEAD_FILE))
    with f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            head, end = read_head(folder / HEAD_FILE), os.fstat(f.fileno()).st_size
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return verify(chain, key, head, end=end)


class AuditChain:
    """The append-only audit log of one node. ``open`` before ``record``; ``close`` at the end.

    ``record`` matches ``isorun_hostd.net.peers.AuditSink``: pass ``chain.record`` as the sink.
    """

    def __init__(self, folder: Path, *, key_file: Path | None = None) -> None:
        self.folder = folder
        self.chain_path = folder / CHAIN_FILE
        self.head_path = folder / HEAD_FILE
        self.key_path = key_file or folder / KEY_FILE
        self._key: bytes | None = None
        self._fd: int | None = None
        # Kept open between appends; (inode, device) tells whether the path still names it.
        self._head_fd: int | None = None
        self._head_inode = (0, 0)
        self._lock = threading.Lock()
        # The last seq this object appended: the chain must always hold it (verify).
        self._written_seq = 0

    def open(self) -> None:
        """Load or make the key, and start the chain file if it is new.

        Raises:
            AuditKeyError: as ``load_key``; or the chain was written under another key, or its
                key is gone (a new key would make every later entry unverifiable).
            OSError: the folder cannot be written.
        """
        if self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.key_path.exists() and self.chain_path.exists():
            raise AuditKeyError(
                f"audit key {self.key_path}: missing, but {self.chain_path} exists; restore "
                "the key, or move the chain away to start a new one"
            )
        key = load_key(self.key_path, create=True)
        fd = os.open(self.chain_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        problem = None
        with _Locked(self._lock, fd):
            if os.fstat(fd).st_size == 0:
                os.write(fd, canonical(header(key)) + b"\n")
                self._replace_head(make_head(key, 0, genesis_mac(key)))
            else:
                problem = _header_problem(os.pread(fd, MAX_LINE_BYTES + 1, 0), key)
        if problem is not None:
            os.close(fd)
            raise AuditKeyError(f"audit key {self.key_path}: {problem}")
        self._key, self._fd = key, fd

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._head_fd is not None:
                os.close(self._head_fd)
                self._head_fd = None

    def record(self, sandbox_id: str | None, kind: str, fields: Mapping[str, object]) -> None:
        """Append one entry: ``kind`` such as ``exec.start``, plain JSON ``fields``, no secret.

        Raises:
            AuditError: the chain is not open.
            ValueError: ``kind`` is empty or too long, or ``fields`` holds NaN or infinity.
            OSError: the entry could not be written (disk full); nothing was appended.
        """
        key = self._require_key()
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._locked():
            head = self._head_for_append(key, stamp)
            self._append(key, head, stamp=stamp, sandbox_id=sandbox_id, kind=kind, fields=fields)

    def entries(
        self, sandbox_id: str | None = None, *, after: int = 0, limit: int = MAX_PAGE
    ) -> list[Entry]:
        """Up to ``limit`` entries with seq > ``after``, of ``sandbox_id`` only if given, as they
        are on disk (not verified: ``verify`` says whether they can be trusted). Blocking.

        Raises:
            OSError: the chain cannot be read.
        """
        limit = max(1, min(limit, MAX_PAGE))
        found: list[Entry] = []
        with self.chain_path.open("rb") as f:
            f.readline(MAX_LINE_BYTES + 1)  # the header
            while len(found) < limit and (raw := f.readline(MAX_LINE_BYTES + 1)):
                try:
                    entry = parse_entry(raw.rstrip(b"\n"))
                except ValueError:
                    continue  # verify names it; a reader still sees the rest
                if entry.seq > after and (sandbox_id is None or entry.sandbox_id == sandbox_id):
                    found.append(entry)
        return found

    def verify(self) -> Report:
        """Verify the chain on disk against the head file and what this process wrote. Blocking.

        Raises:
            AuditError: the chain is not open.
            OSError: the chain cannot be read.
        """
        key = self._require_key()
        with self._locked():
            assert self._fd is not None
            head, end = read_head(self.head_path), os.fstat(self._fd).st_size
            written = self._written_seq
        return verify(self.chain_path, key, head, end=end, written_seq=written)

    # -- appends (under both locks) ---------------------------------------------------------

    def _require_key(self) -> bytes:
        if self._key is None or self._fd is None:
            raise AuditError("the audit chain is not open: call open() (Runtime.start) first")
        return self._key

    def _locked(self) -> _Locked:
        assert self._fd is not None
        return _Locked(self._lock, self._fd)

    def _head_for_append(self, key: bytes, stamp: str) -> Head:
        """The head to append after: the head file's, unless it is gone or edited; then the
        chain's last entry, after an ``audit.head_restored`` entry that says so."""
        try:
            head: Head | None = parse_head(os.pread(self._head_file(), HEAD_BYTES, 0))
        except ValueError:
            head = None
        if head is not None and head_is_sealed(key, head):
            return head
        why = "missing or unreadable" if head is None else "not sealed by this key"
        last = self._last_entry()
        log.error("audit head %s is %s; continuing after entry %s", self.head_path, why, last)
        if last is None:
            restored = make_head(key, 0, genesis_mac(key))
        else:
            restored = make_head(key, last.seq, last.mac)
        fields = {"reason": f"head file {why}", "after_seq": restored.seq}
        return self._append(
            key, restored, stamp=stamp, sandbox_id=None, kind="audit.head_restored", fields=fields
        )

    def _append(
        self,
        key: bytes,
        head: Head,
        *,
        stamp: str,
        sandbox_id: str | None,
        kind: str,
        fields: Mapping[str, object],
    ) -> Head:
        assert self._fd is not None
        entry = make_entry(
            key,
            seq=head.seq + 1,
            time=stamp,
            sandbox_id=sandbox_id,
            kind=kind,
            fields=fields,
            prev_mac=head.mac,
        )
        line = entry.line()
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(f"audit chain {self.chain_path}: short write ({written} of {len(line)})")
        new_head = make_head(key, entry.seq, entry.mac)
        self._replace_head(new_head)
        self._written_seq = entry.seq
        return new_head

    def _replace_head(self, head: Head) -> None:
        # Rewritten in place, padded to a fixed size: one pwrite. A rename over the old head
        # costs ~0.5 ms on ext4 (it forces out the new file's data), per DNS query.
        os.pwrite(self._head_file(), canonical(asdict(head)).ljust(HEAD_BYTES), 0)

    def _head_file(self) -> int:
        """The head file's descriptor, opened again when the file was removed or replaced (an
        empty new one reads as missing)."""
        try:
            now = os.stat(self.head_path)
            same = self._head_fd is not None and (now.st_ino, now.st_dev) == self._head_inode
        except FileNotFoundError:
            same = False
        if same:
            assert self._head_fd is not None
            return self._head_fd
        if self._head_fd is not None:
            os.close(self._head_fd)
        self._head_fd = os.open(self.head_path, os.O_RDWR | os.O_CREAT, 0o600)
        opened = os.fstat(self._head_fd)
        self._head_inode = (opened.st_ino, opened.st_dev)
        if opened.st_size > HEAD_BYTES:
            os.ftruncate(self._head_fd, HEAD_BYTES)
        return self._head_fd

    def _last_entry(self) -> Entry | None:
        """The chain's last entry that parses, read from the end of the file."""
        with self.chain_path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 2 * MAX_LINE_BYTES))
            tail = f.read().split(b"\n")
        for raw in reversed(tail):
            try:
                return parse_entry(raw)
            except ValueError:
                continue
        return None


def _header_problem(start: bytes, key: bytes) -> str | None:
    """Why the chain beginning with ``start`` cannot be continued under ``key``, if it cannot."""
    try:
        written = parse_line(start.split(b"\n", 1)[0])
    except ValueError:
        return "the chain's header is unreadable; run `isorun-hostd audit verify`"
    if written.get("key_id") != key_id(key):
        return (
            f"the chain was written under key {written.get('key_id')!r}, not this one "
            f"({key_id(key)}); restore that key, or move the chain away to start a new one"
        )
    return None


class _Locked:
    """Both locks around one append or head read: this process's threads, then other
    processes (``flock`` on the chain file)."""

    def __init__(self, lock: threading.Lock, fd: int) -> None:
        self._lock = lock
        self._fd = fd

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()
