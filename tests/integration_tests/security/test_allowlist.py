"""The landing page's allowlist.py, verbatim (examples/allowlist.py), through the SDK against
`isorun up --dns-upstream` whose sandboxes see a fake internet (tests/framework/fake_internet.py)
serving api.openai.com, pypi.org and example.com on documentation addresses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.framework.fake_internet import fake_internet
from tests.framework.isorun_up import COMMAND_TIMEOUT_S, start_up

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "allowlist.py"
LANDING_CODE = """\
from isorun import Sandbox

with Sandbox(
    "python",
    deny=["0.0.0.0/0"],                      # block everything
    allow=["api.openai.com", "pypi.org"],    # …except these
) as sb:
    sb.exec("pip install openai")                   # works
    sb.exec("curl https://api.openai.com/v1/models")  # works
    out = sb.exec("curl -m 2 https://example.com")
    assert out.exit_code != 0                   # blocked
"""
HOSTS = {
    "pypi.org": "203.0.113.10",
    "api.openai.com": "203.0.113.11",
    "example.com": "203.0.113.30",
}


def test_the_example_is_the_landing_page_code() -> None:
    assert EXAMPLE.read_text().endswith(LANDING_CODE)


def test_allowlist_example_runs_verbatim(tmp_path: Path) -> None:
    with fake_internet(HOSTS) as net:
        ca = tmp_path / "fake-internet-ca.pem"
        ca.write_bytes(net.ca_pem)
        settings = {"ISORUN_GUEST_CA_FILES": json.dumps([str(ca)])}
        (tmp_path / "up").mkdir()
        with start_up(tmp_path / "up", args=("--dns-upstream", net.dns), env=settings) as up:
            result = subprocess.run(
                [sys.executable, str(EXAMPLE)],
                env=up.env(),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        requests = net.requests()
    assert result.returncode == 0, result.stderr
    seen = {(r["host"], r["path"]) for r in requests}
    # pip found the package on pypi.org and downloaded it; curl reached the models list.
    assert ("pypi.org", "/simple/openai/") in seen
    assert any(host == "pypi.org" and path.startswith("/packages/openai-") for host, path in seen)
    assert ("api.openai.com", "/v1/models") in seen
    assert not any(host == "example.com" for host, _ in seen)
