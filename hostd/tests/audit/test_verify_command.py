"""``isorun-hostd audit verify``: reads the files a node left, exits 0 when intact, 1 naming the
first bad entry, 125 when it cannot check at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from isorun_hostd.__main__ import main
from isorun_hostd.audit import AuditChain


def test_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditChain(tmp_path / "audit")
    audit.open()
    for n in range(3):
        audit.record("sb-1", "exec.start", {"pid": n, "command": ["true"]})
    audit.close()

    assert main(["audit", "verify", "--state-dir", str(tmp_path)]) == 0
    assert "intact: 3 entries" in capsys.readouterr().out

    lines = audit.chain_path.read_bytes().splitlines(keepends=True)
    del lines[2]  # entry 2
    audit.chain_path.write_bytes(b"".join(lines))
    assert main(["audit", "verify", "--state-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out.startswith("entry 2: removed:")

    assert main(["audit", "verify", "--state-dir", str(tmp_path / "elsewhere")]) == 125
    assert "no such file" in capsys.readouterr().err
