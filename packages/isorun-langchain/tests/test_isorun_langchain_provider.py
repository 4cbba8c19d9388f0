"""deepagents-code discovers `IsorunProvider` by its entry point and drives real isorun VMs.

deepagents-code needs Python >= 3.12 and the workspace runs 3.11, so the provider runs in a
venv of its own (`tests.framework.dcode_venv`, built by `make setup`). `SCRIPT` runs in it
against this package's `isorun up`, through deepagents-code's registry as
`dcode --sandbox isorun [--sandbox-id ID]` does, and prints what it saw as JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.framework.dcode_venv import dcode_venv
from tests.framework.isorun_up import Up

pytestmark = pytest.mark.vm

SCRIPT_TIMEOUT_S = 300

SCRIPT = r"""
import json
import sys

from deepagents_code.integrations.sandbox_factory import verify_sandbox_deps
from deepagents_code.integrations.sandbox_provider import (
    SandboxError,
    SandboxNotFoundError,
    SandboxProvider,
)
from deepagents_code.integrations.sandbox_registry import SandboxRegistry

out = {}
registry = SandboxRegistry.load()
out["available"] = registry.available_providers()
meta = registry.get_metadata("isorun")
out["metadata"] = {
    "name": meta.name,
    "working_dir": meta.working_dir,
    "supports_sandbox_id": meta.supports_sandbox_id,
    "supports_snapshot_name": meta.supports_snapshot_name,
}
verify_sandbox_deps("isorun")

provider = registry.create_provider("isorun")
out["provider_class"] = type(provider).__module__ + ":" + type(provider).__name__
out["is_sandbox_provider"] = isinstance(provider, SandboxProvider)

backend = provider.get_or_create(allow=["pypi.org"], profile="web-dev")
sandbox_id = backend.id
try:
    import isorun
    handle = isorun.Sandbox.connect(sandbox_id)
    network = handle.network.get()
    handle.close()  # not destroy: the provider deletes it below
    out["network"] = [network.profile, network.allow]
    hi = backend.execute("echo hi")
    out["echo"] = [hi.output, hi.exit_code]
    out["pwd"] = backend.execute("pwd").output.strip()
    # deepagents' own write tool: a python3 script through execute (deepagents 0.7.30 here).
    out["write_error"] = backend.write("/workspace/notes.txt", "kept across attaches\n").error

    # A second provider, as a second `dcode --sandbox isorun --sandbox-id ID` makes.
    again = registry.create_provider("isorun").get_or_create(sandbox_id=sandbox_id)
    out["same_id"] = again.id == sandbox_id
    out["reattached_cat"] = again.execute("cat notes.txt").output
finally:
    provider.delete(sandbox_id=sandbox_id)

def error_of(call):
    try:
        call()
    except SandboxError as error:
        return type(error).__name__
    return None

out["get_deleted"] = error_of(lambda: provider.get_or_create(sandbox_id=sandbox_id))
out["delete_deleted"] = error_of(lambda: provider.delete(sandbox_id=sandbox_id))
out["get_unknown"] = error_of(lambda: provider.get_or_create(sandbox_id="sb-doesnotexist"))
bad_key = type(provider)(api_key="not-a-key")
out["bad_key"] = error_of(lambda: bad_key.get_or_create(sandbox_id=sandbox_id))
json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def dcode_python() -> Path:
    """The Python of a venv holding deepagents-code and this working tree's packages."""
    python = dcode_venv(offline=True)
    if python is None:
        pytest.skip(
            "deepagents-code needs Python >= 3.12 and uv: install one "
            "(apt's python3.12, pyenv, or `uv python install 3.12`) to run this test"
        )
    return python


def test_dcode_registry_drives_isorun_provider(up: Up, dcode_python: Path, tmp_path: Path) -> None:
    script, results = tmp_path / "dcode_provider.py", tmp_path / "results.json"
    script.write_text(SCRIPT)
    # HOME: no ~/.deepagents/config.toml of the machine's user may add or override providers.
    env = {**up.env(), "HOME": str(tmp_path)}
    done = subprocess.run(
        [str(dcode_python), str(script), str(results)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(results.read_text())

    assert "isorun" in out["available"]
    assert out["metadata"] == {
        "name": "isorun",
        "working_dir": "/workspace",
        "supports_sandbox_id": True,
        "supports_snapshot_name": False,
    }
    assert out["provider_class"] == "isorun_langchain.provider:IsorunProvider"
    assert out["is_sandbox_provider"]
    assert out["network"] == ["web-dev", ["pypi.org"]]
    assert out["echo"] == ["hi", 0]
    assert out["pwd"] == "/workspace"
    assert out["write_error"] is None
    assert out["same_id"]
    assert out["reattached_cat"] == "kept across attaches"
    assert out["get_deleted"] == "SandboxNotFoundError"
    assert out["delete_deleted"] == "SandboxNotFoundError"
    assert out["get_unknown"] == "SandboxNotFoundError"
    assert out["bad_key"] == "SandboxError"
