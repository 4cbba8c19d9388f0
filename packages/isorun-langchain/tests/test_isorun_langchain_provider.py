"""deepagents-code discovers `IsorunProvider` by its entry point and drives real isorun VMs.

deepagents-code needs Python >= 3.12 and the workspace runs 3.11, so the provider runs in a
venv of its own, cached per machine and keyed by what goes into it:

```
~/.cache/isorun/venvs/dcode-<key>/   key = sha256(python, DCODE_REQUIREMENT, the sources and
  .complete                          pyprojects of isorun-core and isorun-langchain)
```
built with `uv venv` + `uv pip install` (uv's own cache makes a rebuild quick) and reused while
the key holds. `SCRIPT` runs in it against this package's `isorun up`, through deepagents-code's
registry as `dcode --sandbox isorun [--sandbox-id ID]` does, and prints what it saw as JSON.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.framework.isorun_up import Up

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[3]
PACKAGES = (REPO / "packages" / "isorun-core", REPO / "packages" / "isorun-langchain")
DCODE_REQUIREMENT = "deepagents-code==0.1.88"
PYTHON_CANDIDATES = ("python3.14", "python3.13", "python3.12")
CACHE_ENV = "ISORUN_VENV_CACHE"
STALE_VENV_S = 7 * 24 * 3600
PROBE_TIMEOUT_S = 30
INSTALL_TIMEOUT_S = 600
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

backend = provider.get_or_create()
sandbox_id = backend.id
try:
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


def _python_312() -> str | None:
    """Find an interpreter >= 3.12: uv's view first, then PATH, then pyenv's versions."""
    candidates: list[str] = []
    uv = shutil.which("uv")
    if uv:
        found = subprocess.run(
            [uv, "python", "find", "--no-project", ">=3.12"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
        candidates.append(found.stdout.strip())
    candidates += [path for name in PYTHON_CANDIDATES if (path := shutil.which(name))]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates += sorted(str(p) for p in pyenv.glob("3.1[2-9]*/bin/python3"))
    for candidate in filter(None, candidates):
        # pyenv shims exist on PATH for versions that are not selected: run each to be sure.
        probe = subprocess.run(
            [candidate, "-c", "import sys; sys.exit(sys.version_info < (3, 12))"],
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    return None


def _venv_key(python: str) -> str:
    digest = hashlib.sha256()
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
        check=True,
    ).stdout
    digest.update(f"{python}\n{version}\n{DCODE_REQUIREMENT}\n".encode())
    for package in PACKAGES:
        files = [package / "pyproject.toml", *sorted((package / "src").rglob("*.py"))]
        for path in files:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _prune(cache: Path, keep: Path) -> None:
    # Each change to the sources keys a new venv; drop the ones no run has used for a week.
    for venv in cache.glob("dcode-*"):
        marker = venv / ".complete"
        if venv != keep and marker.exists() and time.time() - marker.stat().st_mtime > STALE_VENV_S:
            shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture(scope="module")
def dcode_python() -> Iterator[Path]:
    """The Python of a venv holding deepagents-code and this working tree's packages."""
    uv = shutil.which("uv")
    python = _python_312()
    if uv is None or python is None:
        pytest.skip(
            "deepagents-code needs Python >= 3.12 and uv: install one "
            "(`uv python install 3.12`, apt's python3.12 or pyenv) to run this test"
        )
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "isorun" / "venvs")
    venv = cache / f"dcode-{_venv_key(python)}"
    cache.mkdir(parents=True, exist_ok=True)
    # The lock makes parallel runs wait for one build instead of racing into the same folder.
    with open(cache / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = venv / ".complete"
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)
            env = {**os.environ, "VIRTUAL_ENV": str(venv)}
            env.pop("UV_PROJECT_ENVIRONMENT", None)
            for command in (
                [uv, "venv", "--quiet", "--python", python, str(venv)],
                [
                    uv,
                    "pip",
                    "install",
                    "--quiet",
                    DCODE_REQUIREMENT,
                    str(PACKAGES[0]),
                    f"{PACKAGES[1]}[dcode]",
                ],
            ):
                subprocess.run(command, env=env, cwd=cache, timeout=INSTALL_TIMEOUT_S, check=True)
            marker.write_text(DCODE_REQUIREMENT)
        marker.touch()
    _prune(cache, venv)
    yield venv / "bin" / "python"


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
    assert out["echo"] == ["hi", 0]
    assert out["pwd"] == "/workspace"
    assert out["write_error"] is None
    assert out["same_id"]
    assert out["reattached_cat"] == "kept across attaches"
    assert out["get_deleted"] == "SandboxNotFoundError"
    assert out["delete_deleted"] == "SandboxNotFoundError"
    assert out["get_unknown"] == "SandboxNotFoundError"
    assert out["bad_key"] == "SandboxError"
