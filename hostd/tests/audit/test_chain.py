"""The audit chain on disk: appends verify; every edit, removal, swap, cut tail or edited head is
named by the seq of the first entry it touched; the key is made once, 0600, and outlives hostd."""

from __future__ import annotations

import itertools
import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from isorun_hostd.audit import AuditChain, AuditKeyError, load_key, verify, verify_folder
from isorun_hostd.audit.record import MAX_LINE_BYTES


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[AuditChain]:
    audit = AuditChain(tmp_path / "audit")
    audit.open()
    for n in range(1, 6):
        audit.record("sb-1" if n % 2 else "sb-2", "exec.end", {"pid": n, "exit_code": 0})
    yield audit
    audit.close()


def lines(chain: AuditChain) -> list[bytes]:
    return chain.chain_path.read_bytes().splitlines(keepends=True)


def rewrite(chain: AuditChain, new_lines: list[bytes]) -> None:
    chain.chain_path.write_bytes(b"".join(new_lines))


def offline(chain: AuditChain) -> tuple[int, str] | None:
    """What a verifier that has only the files finds: (seq, reason) of the first bad entry."""
    report = verify_folder(chain.folder, load_key(chain.key_path, create=False))
    return None if report.first_bad is None else (report.first_bad.seq, report.first_bad.reason)


def test_appends_verify_and_read_back_per_sandbox(chain: AuditChain) -> None:
    report = chain.verify()
    assert report.ok and report.checked == 5
    assert offline(chain) is None
    entries = chain.entries("sb-1")
    assert [e.seq for e in entries] == [1, 3, 5]
    assert [e.fields["pid"] for e in entries] == [1, 3, 5]
    assert [e.seq for e in chain.entries(after=3)] == [4, 5]
    # Each entry carries the previous one's MAC: a client sees the links.
    everything = chain.entries()
    assert all(b.prev_mac == a.mac for a, b in itertools.pairwise(everything))


def test_an_edited_byte_is_named(chain: AuditChain) -> None:
    content = lines(chain)
    content[3] = content[3].replace(b'"exit_code":0', b'"exit_code":1')  # entry 3
    rewrite(chain, content)
    report = chain.verify()
    assert report.first_bad is not None
    assert (report.first_bad.seq, report.first_bad.reason) == (3, "altered")
    assert report.checked == 2
    assert offline(chain) == (3, "altered")


def test_a_removed_entry_is_named(chain: AuditChain) -> None:
    content = lines(chain)
    del content[3]
    rewrite(chain, content)
    assert offline(chain) == (3, "removed")


def test_swapped_entries_are_named(chain: AuditChain) -> None:
    content = lines(chain)
    content[3], content[4] = content[4], content[3]
    rewrite(chain, content)
    assert offline(chain) == (3, "reordered")


def test_a_copied_entry_is_named(chain: AuditChain) -> None:
    content = lines(chain)
    rewrite(chain, [*content[:5], content[2], content[5]])
    assert offline(chain) == (2, "reordered")


def test_a_cut_tail_is_named(chain: AuditChain) -> None:
    rewrite(chain, lines(chain)[:-2])
    assert offline(chain) == (4, "truncated")
    assert chain.verify().first_bad is not None


def test_a_cut_tail_with_an_old_head_put_back_shows_in_the_writer(tmp_path: Path) -> None:
    audit = AuditChain(tmp_path / "audit")
    audit.open()
    for n in range(3):
        audit.record(None, "policy.change", {"n": n})
    old_head = audit.head_path.read_bytes()
    audit.record(None, "policy.change", {"n": 3})
    rewrite(audit, lines(audit)[:-1])
    audit.head_path.write_bytes(old_head)
    # A verifier with only the files cannot tell (the key holder's old head is genuine) ...
    assert offline(audit) is None
    # ... the process that wrote entry 4 can.
    report = audit.verify()
    assert report.first_bad is not None
    assert (report.first_bad.seq, report.first_bad.reason) == (4, "truncated")
    audit.close()


def test_an_edited_or_missing_head_is_named(chain: AuditChain) -> None:
    head = json.loads(chain.head_path.read_bytes())
    chain.head_path.write_text(json.dumps({**head, "seq": 4}))
    assert offline(chain) == (6, "head")
    chain.head_path.unlink()
    assert offline(chain) == (6, "head")


def test_a_torn_or_oversized_line_is_unreadable(chain: AuditChain) -> None:
    content = lines(chain)
    rewrite(chain, [*content[:-1], content[-1][:40]])
    assert offline(chain) == (5, "unreadable")
    rewrite(chain, [*content[:2], b"x" * (MAX_LINE_BYTES + 10) + b"\n", *content[3:]])
    assert offline(chain) == (2, "unreadable")


def test_a_chain_under_another_key_is_refused(chain: AuditChain, tmp_path: Path) -> None:
    other = AuditChain(tmp_path / "other")
    other.open()
    report = verify(chain.chain_path, load_key(other.key_path, create=False), None)
    assert report.first_bad is not None
    assert (report.first_bad.seq, report.first_bad.reason) == (0, "header")
    other.close()


def test_the_key_is_private_and_outlives_the_writer(tmp_path: Path) -> None:
    folder = tmp_path / "audit"
    first = AuditChain(folder)
    first.open()
    first.record("sb-1", "sandbox.create", {"image": "python:3.11"})
    first.close()
    key = first.key_path.read_bytes()
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    again = AuditChain(folder)
    again.open()
    again.record("sb-1", "sandbox.destroy", {})
    assert again.key_path.read_bytes() == key
    report = again.verify()
    assert report.ok and report.checked == 2
    again.close()

    first.key_path.chmod(0o644)
    with pytest.raises(AuditKeyError, match="chmod 600"):
        AuditChain(folder).open()


def test_a_key_file_elsewhere(tmp_path: Path) -> None:
    audit = AuditChain(tmp_path / "audit", key_file=tmp_path / "keys" / "audit.key")
    audit.open()
    audit.record(None, "policy.change", {})
    assert (tmp_path / "keys" / "audit.key").is_file()
    assert not (tmp_path / "audit" / "key").exists()
    assert audit.verify().ok
    audit.close()
    with pytest.raises(AuditKeyError, match="no such file"):
        load_key(tmp_path / "audit" / "key", create=False)


def test_two_writers_and_many_threads_keep_one_chain(tmp_path: Path) -> None:
    writers = [AuditChain(tmp_path / "audit"), AuditChain(tmp_path / "audit")]
    for writer in writers:
        writer.open()

    def append(writer: AuditChain, n: int) -> None:
        for i in range(50):
            writer.record(f"sb-{n}", "egress.dns", {"i": i})

    threads = [threading.Thread(target=append, args=(writers[n % 2], n)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = writers[0].verify()
    assert report.ok and report.checked == 300
    assert writers[1].verify().ok
    for writer in writers:
        writer.close()


def test_oversized_fields_keep_their_size_and_digest(tmp_path: Path) -> None:
    audit = AuditChain(tmp_path / "audit")
    audit.open()
    audit.record("sb-1", "exec.start", {"command": "x" * MAX_LINE_BYTES})
    (entry,) = audit.entries("sb-1")
    assert set(entry.fields["oversized"]) == {"bytes", "sha256"}
    assert audit.verify().ok
    audit.close()


def test_a_lost_or_replaced_head_is_restored_with_an_entry_that_says_so(
    chain: AuditChain,
) -> None:
    chain.head_path.unlink()
    chain.record("sb-1", "exec.end", {"pid": 6})
    forged = chain.folder / "forged"
    forged.write_text('{"head_mac": "0", "mac": "0", "seq": 99}')
    forged.replace(chain.head_path)  # a new file under the name the writer holds open
    chain.record("sb-1", "exec.end", {"pid": 7})
    kinds = [(e.seq, e.kind) for e in chain.entries(after=5)]
    assert kinds == [
        (6, "audit.head_restored"),
        (7, "exec.end"),
        (8, "audit.head_restored"),
        (9, "exec.end"),
    ]
    assert chain.entries(after=7)[0].fields["reason"] == "head file not sealed by this key"
    assert chain.verify().ok


def test_verifying_while_another_thread_appends_never_sees_half_an_entry(tmp_path: Path) -> None:
    audit = AuditChain(tmp_path / "audit")
    audit.open()
    key = load_key(audit.key_path, create=False)
    done = threading.Event()

    def append() -> None:
        for i in range(400):
            audit.record("sb-1", "egress.dns", {"name": "x" * (i % 300)})
        done.set()

    writer = threading.Thread(target=append)
    writer.start()
    reports = []
    while not done.is_set():
        reports += [audit.verify(), verify_folder(audit.folder, key)]
    writer.join()
    assert reports and all(report.ok for report in reports)
    assert audit.verify().checked == 400
    audit.close()


def test_a_chain_is_never_continued_under_another_key(chain: AuditChain) -> None:
    chain.close()
    chain.key_path.unlink()
    with pytest.raises(AuditKeyError, match="missing, but"):
        AuditChain(chain.folder).open()
    chain.key_path.write_bytes(b"k" * 32)
    chain.key_path.chmod(0o600)
    with pytest.raises(AuditKeyError, match="written under key"):
        AuditChain(chain.folder).open()
