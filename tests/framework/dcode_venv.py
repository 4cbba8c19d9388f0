"""The venv in which deepagents-code (Python >= 3.12) runs isorun-langchain's provider.

The workspace runs 3.11, so the `dcode` provider test needs a venv of its own, cached per
machine and keyed by what goes into it:

```
~/.cache/isorun/venvs/dcode-<key>/   key = sha256(python, DCODE_REQUIREMENT, the sources and
  .complete                          pyprojects of isorun-core and isorun-langchain)
```
`make setup` builds it online (`python -m tests.framework.dcode_venv`), which also fills uv's
cache; a test rebuilds it after a source change with `--offline`, so no test reaches PyPI.
Without a Python >= 3.12 on the machine there is no venv and the test skips.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (REPO / "packages" / "isorun-core", REPO / "packages" / "isorun-langchain")
DCODE_REQUIREMENT = "deepagents-code==0.1.88"
PYTHON_CANDIDATES = ("python3.14", "python3.13", "python3.12")
CACHE_ENV = "ISORUN_VENV_CACHE"
STALE_VENV_S = 7 * 24 * 3600
PROBE_TIMEOUT_S = 30
INSTALL_TIMEOUT_S = 600


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
    # "no-sources": venvs from before the SDK was installed non-editable must not be reused.
    digest.update(f"{python}\n{version}\n{DCODE_REQUIREMENT}\nno-sources\n".encode())
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


def dcode_venv(*, offline: bool) -> Path | None:
    """The Python of the venv (built if missing), or None without a Python >= 3.12 or uv.

    Raises:
        subprocess.CalledProcessError: the build failed (offline: uv's cache lacks a wheel;
            run `make setup`).
    """
    uv = shutil.which("uv")
    python = _python_312()
    if uv is None or python is None:
        return None
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
            # --no-sources: the workspace's `isorun = { workspace = true }` would install the SDK
            # editable, pointing into whichever checkout built the venv (keyed by content only).
            install = [uv, "pip", "install", "--quiet", "--no-sources"]
            install += ["--offline"] if offline else []
            for command in (
                [uv, "venv", "--quiet", "--python", python, str(venv)],
                [*install, DCODE_REQUIREMENT, str(PACKAGES[0]), f"{PACKAGES[1]}[dcode]"],
            ):
                subprocess.run(command, env=env, cwd=cache, timeout=INSTALL_TIMEOUT_S, check=True)
            marker.write_text(DCODE_REQUIREMENT)
        marker.touch()
    _prune(cache, venv)
    return venv / "bin" / "python"


if __name__ == "__main__":
    built = dcode_venv(offline=False)
    print(f"dcode venv: {built}" if built else "dcode venv: skipped, no Python >= 3.12 found")
    sys.exit(0)
