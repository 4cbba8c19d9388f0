"""The audit log's on-disk format: a header, HMAC-chained entries, and a sealed head.

```
<state_dir>/audit/
  key           32 random bytes, mode 0600, made once (Settings.audit_key_file moves it)
  chain.jsonl   one JSON object per line, append only:
                  line 0  header  {"key_id": K, "magic": "isorun-audit", "version": 1}
                  line n  entry   {"fields": {...}, "kind": "exec.start", "mac": M(n),
                                   "prev_mac": M(n-1), "sandbox_id": "sb-..." | null,
                                   "seq": n, "time": "2026-11-28T07:14:27.123Z"}
  head          {"head_mac": H, "mac": M(last), "seq": last}, padded with spaces to 256 bytes,
                rewritten in place after each entry

M(n)  = HMAC-SHA256(key, canonical(entry n without "mac"))      (hex)
M(0)  = HMAC-SHA256(key, canonical(header))   the first entry's prev_mac: the header's checksum
H     = HMAC-SHA256(key, canonical({"head": last, "mac": M(last)}))
K     = HMAC-SHA256(key, "isorun-audit key id")[:16 hex]   names the key without revealing it
canonical(x) = JSON with sorted keys, no spaces, UTF-8
```
Each MAC covers the previous one, so an entry cannot be edited, dropped, moved or copied from
another chain without the key; the sealed head names the last entry, so a cut tail shows too.
Readers refuse a line longer than ``MAX_LINE_BYTES``; the writer keeps every entry within it
by replacing oversized ``fields`` with their size and SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

MAGIC = "isorun-audit"
VERSION = 1
KEY_BYTES = 32
MAX_LINE_BYTES = 64 * 1024
# Room left in a line for everything but ``fields`` (seq, time, kind, ids, two MACs).
MAX_FIELDS_BYTES = MAX_LINE_BYTES - 1024
MAX_KIND_CHARS = 64


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit entry, as written: ``mac`` links it to ``prev_mac``, the entry before."""

    seq: int
    time: str
    sandbox_id: str | None
    kind: str
    fields: dict[str, Any]
    prev_mac: str
    mac: str

    def line(self) -> bytes:
        return canonical(asdict(self)) + b"\n"


@dataclass(frozen=True, slots=True)
class Head:
    """The last entry's seq and MAC, sealed with the key so that it cannot be rewound."""

    seq: int
    mac: str
    head_mac: str


def canonical(value: object) -> bytes:
    """The bytes a MAC covers: the same for any two equal JSON values."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def seal(key: bytes, value: object) -> str:
    return hmac.new(key, canonical(value), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    return hmac.new(key, b"isorun-audit key id", hashlib.sha256).hexdigest()[:16]


def header(key: bytes) -> dict[str, object]:
    return {"key_id": key_id(key), "magic": MAGIC, "version": VERSION}


def genesis_mac(key: bytes) -> str:
    """The first entry's ``prev_mac``: the header's MAC."""
    return seal(key, header(key))


def entry_mac(key: bytes, entry: Mapping[str, object]) -> str:
    """The MAC of ``entry``, a parsed line: every member but ``mac`` itself."""
    return seal(key, {name: value for name, value in entry.items() if name != "mac"})


def make_entry(
    key: bytes,
    *,
    seq: int,
    time: str,
    sandbox_id: str | None,
    kind: str,
    fields: Mapping[str, object],
    prev_mac: str,
) -> Entry:
    """A new entry after ``prev_mac``, its fields made plain JSON and kept within the cap.

    Raises:
        ValueError: ``kind`` is empty or too long, or ``fields`` holds NaN or infinity.
    """
    if not 0 < len(kind) <= MAX_KIND_CHARS:
        raise ValueError(f"audit kind {kind!r}: must be 1 to {MAX_KIND_CHARS} characters")
    # Through JSON and back: what is MACed now is what a reader parses later. ``str`` covers
    # paths and enums; a caller's non-JSON value must not lose its entry.
    encoded = json.dumps(dict(fields), sort_keys=True, default=str, allow_nan=False)
    plain: dict[str, Any] = json.loads(encoded)
    if len(encoded.encode()) > MAX_FIELDS_BYTES:
        digest = hashlib.sha256(canonical(plain)).hexdigest()
        plain = {"oversized": {"bytes": len(encoded.encode()), "sha256": digest}}
    body: dict[str, object] = {
        "seq": seq,
        "time": time,
        "sandbox_id": sandbox_id,
        "kind": kind,
        "fields": plain,
        "prev_mac": prev_mac,
    }
    return Entry(
        seq=seq,
        time=time,
        sandbox_id=sandbox_id,
        kind=kind,
        fields=plain,
        prev_mac=prev_mac,
        mac=seal(key, body),
    )


def make_head(key: bytes, seq: int, mac: str) -> Head:
    return Head(seq=seq, mac=mac, head_mac=seal(key, {"head": seq, "mac": mac}))


def head_is_sealed(key: bytes, head: Head) -> bool:
    return hmac.compare_digest(head.head_mac, make_head(key, head.seq, head.mac).head_mac)


def parse_line(line: bytes) -> dict[str, Any]:
    """A line of the chain as a JSON object.

    Raises:
        ValueError: it is longer than MAX_LINE_BYTES, not JSON, or not an object.
    """
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"{len(line)} bytes, over the {MAX_LINE_BYTES}-byte cap")
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def parse_entry(line: bytes) -> Entry:
    """An entry line as written (its MAC not checked).

    Raises:
        ValueError: the line is over the cap, not JSON, or lacks a member or has one of the
            wrong type.
    """
    value = parse_line(line)
    try:
        entry = Entry(
            seq=value["seq"],
            time=value["time"],
            sandbox_id=value["sandbox_id"],
            kind=value["kind"],
            fields=value["fields"],
            prev_mac=value["prev_mac"],
            mac=value["mac"],
        )
    except KeyError as exc:
        raise ValueError(f"no {exc.args[0]!r} member") from exc
    if set(value) != set(asdict(entry)):
        raise ValueError(f"unexpected members {sorted(set(value) - set(asdict(entry)))}")
    types_ok = (
        type(entry.seq) is int
        and isinstance(entry.time, str)
        and isinstance(entry.sandbox_id, str | None)
        and isinstance(entry.kind, str)
        and isinstance(entry.fields, dict)
        and isinstance(entry.prev_mac, str)
        and isinstance(entry.mac, str)
    )
    if not types_ok:
        raise ValueError("a member has the wrong type")
    return entry


def parse_head(data: bytes) -> Head:
    """Raises: ValueError: not a head written by this module."""
    value = parse_line(data.strip())
    try:
        head = Head(seq=value["seq"], mac=value["mac"], head_mac=value["head_mac"])
    except KeyError as exc:
        raise ValueError(f"no {exc.args[0]!r} member") from exc
    if (
        type(head.seq) is not int
        or not isinstance(head.mac, str)
        or not isinstance(head.head_mac, str)
    ):
        raise ValueError("a member has the wrong type")
    return head
