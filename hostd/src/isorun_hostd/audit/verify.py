"""Check a chain against its key and head; name the first entry that is not as written.

```
header     magic, version, key id         ─► "unreadable" / "header"              (seq 0)
line n     parse (size cap, members)      ─► "unreadable"
           MAC over its content           ─► "altered"
           seq = n ?  > n: is n further on ─► "reordered", else "removed"
                      < n: an entry again  ─► "reordered"
           prev_mac = MAC of entry n-1    ─► "altered" (its link)
end        sealed head: seq, MAC          ─► "head" (missing or edited), "truncated"
```
Only the first finding is reported: after it, every later link is in doubt anyway.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from isorun_hostd.audit.record import (
    MAX_LINE_BYTES,
    Entry,
    Head,
    entry_mac,
    genesis_mac,
    head_is_sealed,
    header,
    key_id,
    parse_entry,
    parse_line,
)

Reason = Literal["altered", "removed", "reordered", "truncated", "unreadable", "header", "head"]


class _Reader(Protocol):
    def readline(self, size: int, /) -> bytes: ...

    def tell(self) -> int: ...

    def seek(self, offset: int, /) -> int: ...


class _Bounded:
    """A file read no further than ``end``."""

    def __init__(self, f: BinaryIO, end: int) -> None:
        self._f = f
        self._end = end

    def readline(self, size: int, /) -> bytes:
        room = self._end - self._f.tell()
        return self._f.readline(min(size, room)) if room > 0 else b""

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, /) -> int:
        return self._f.seek(offset)


@dataclass(frozen=True, slots=True)
class Finding:
    """The first entry that is not as written: ``seq`` is the one expected there."""

    seq: int
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    """``checked`` entries chained correctly before ``first_bad`` (None: the chain is intact)."""

    checked: int
    first_bad: Finding | None

    @property
    def ok(self) -> bool:
        return self.first_bad is None


def verify(
    chain: Path, key: bytes, head: Head | None, *, end: int | None = None, written_seq: int = 0
) -> Report:
    """Check ``chain`` link by link, then against ``head`` (None: the head file is missing).

    ``end`` is the chain's size when ``head`` was read (chain.py reads both between two
    appends): later appends are left out, so that a line being written is never half read.
    ``written_seq`` is the last seq this process appended (0: none); a chain ending before it
    was cut, whatever the head file says.

    Raises:
        OSError: the chain exists but cannot be read.
    """
    if not chain.exists():
        if (head is not None and head.seq > 0) or written_seq > 0:
            return Report(0, Finding(1, "truncated", f"{chain} is gone"))
        return Report(0, None)
    with chain.open("rb") as f:
        reader = _Bounded(f, end if end is not None else os.fstat(f.fileno()).st_size)
        finding, last, mac_at_head = _walk(reader, key, head.seq if head is not None else None)
    if finding is not None:
        return Report(last, finding)
    return Report(last, _check_end(key, head, last, mac_at_head, written_seq))


def _walk(f: _Reader, key: bytes, head_seq: int | None) -> tuple[Finding | None, int, str | None]:
    """(first finding, last good seq, MAC of entry ``head_seq`` if reached)."""
    first = _read_line(f)
    if first is None:
        return None, 0, None
    problem = _check_header(first, key)
    if problem is not None:
        return problem, 0, None
    expected, prev = 1, genesis_mac(key)
    mac_at_head = prev if head_seq == 0 else None
    line_no = 1
    while (raw := _read_line(f)) is not None:
        line_no += 1
        checked = _check_entry(f, key, raw, f"line {line_no}", expected=expected, prev=prev)
        if isinstance(checked, Finding):
            return checked, expected - 1, mac_at_head
        if checked.seq == head_seq:
            mac_at_head = checked.mac
        prev = checked.mac
        expected += 1
    return None, expected - 1, mac_at_head


def _check_entry(
    f: _Reader, key: bytes, raw: bytes, where: str, *, expected: int, prev: str
) -> Entry | Finding:
    """The entry in ``raw`` if it is entry ``expected`` and follows ``prev``, else why not."""
    try:
        value = parse_line(raw)
        entry = parse_entry(raw)
    except ValueError as exc:
        return Finding(expected, "unreadable", f"{where}: {exc}")
    if not hmac.compare_digest(entry_mac(key, value), entry.mac):
        detail = f"{where}: its MAC does not match its content (edited, or not of this key)"
        return Finding(expected, "altered", detail)
    if entry.seq != expected:
        return _misplaced(f, key, entry.seq, where, expected)
    if not hmac.compare_digest(entry.prev_mac, prev):
        detail = f"{where}: its link to entry {expected - 1} is broken (spliced in)"
        return Finding(expected, "altered", detail)
    return entry


def _misplaced(f: _Reader, key: bytes, seq: int, where: str, expected: int) -> Finding:
    """A genuine entry ``seq`` where entry ``expected`` belongs."""
    if seq < expected:
        detail = f"{where}: entry {seq} appears again after entry {expected - 1}"
        return Finding(seq, "reordered", detail)
    if _appears_later(f, key, expected):
        detail = f"{where} holds entry {seq}; entry {expected} comes later"
        return Finding(expected, "reordered", detail)
    missing = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
    return Finding(expected, "removed", f"{where} holds entry {seq}: entries {missing} are missing")


def _check_header(line: bytes, key: bytes) -> Finding | None:
    try:
        value = parse_line(line)
    except ValueError as exc:
        return Finding(0, "unreadable", f"line 1 (header): {exc}")
    if value.get("magic") != "isorun-audit":
        return Finding(0, "unreadable", "line 1: not an isorun audit chain (no magic)")
    if value.get("version") != header(key)["version"]:
        return Finding(0, "unreadable", f"line 1: version {value.get('version')!r} unsupported")
    if value.get("key_id") != key_id(key):
        detail = f"written with key {value.get('key_id')!r}, not this one ({key_id(key)})"
        return Finding(0, "header", detail)
    if value != header(key):
        return Finding(0, "header", "line 1: the header was edited")
    return None


def _check_end(
    key: bytes, head: Head | None, last: int, mac_at_head: str | None, written_seq: int
) -> Finding | None:
    if written_seq > last:
        detail = f"this node wrote entry {written_seq}; the chain ends at {last}"
        return Finding(last + 1, "truncated", detail)
    if head is None:
        missing = "the head file is missing: a cut tail would not show"
        return Finding(last + 1, "head", missing) if last > 0 else None
    return _check_head(key, head, last, mac_at_head)


def _check_head(key: bytes, head: Head, last: int, mac_at_head: str | None) -> Finding | None:
    if not head_is_sealed(key, head):
        return Finding(last + 1, "head", "the head file was edited (its seal does not match)")
    if head.seq > last:
        detail = f"the head names entry {head.seq}; the chain ends at {last}"
        return Finding(last + 1, "truncated", detail)
    if mac_at_head is None or not hmac.compare_digest(mac_at_head, head.mac):
        detail = f"the head's MAC is not entry {head.seq}'s (an old head put back?)"
        return Finding(head.seq, "head", detail)
    return None


def _appears_later(f: _Reader, key: bytes, seq: int) -> bool:
    """Whether a genuine entry ``seq`` is further on in ``f``; ``f`` is left where it was."""
    position = f.tell()
    try:
        for raw in _lines(f):
            try:
                value = parse_line(raw)
            except ValueError:
                continue
            if value.get("seq") == seq and hmac.compare_digest(
                entry_mac(key, value), str(value.get("mac"))
            ):
                return True
        return False
    finally:
        f.seek(position)


def _lines(f: _Reader) -> Iterator[bytes]:
    while (raw := _read_line(f)) is not None:
        yield raw


def _read_line(f: _Reader) -> bytes | None:
    """The next line without its newline; an over-long one is returned cut at the cap + 1 (so
    that parsing refuses it) and the rest of it skipped."""
    raw = f.readline(MAX_LINE_BYTES + 1)
    if not raw:
        return None
    if raw.endswith(b"\n"):
        return raw[:-1]
    if len(raw) > MAX_LINE_BYTES:
        while (more := f.readline(MAX_LINE_BYTES)) and not more.endswith(b"\n"):
            pass
        return raw
    # The last line, cut short (a crash mid-write, or an edit): never valid JSON of an entry.
    return raw + b"\0"
