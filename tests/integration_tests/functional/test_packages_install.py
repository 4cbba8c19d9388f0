"""Each published package installs on its own into a fresh venv and pulls only what it needs.

`uv pip install --offline` resolves from uv's cache only (which `uv sync` of the workspace has
filled), so the test sends nothing off the machine. `isorun` is not on PyPI yet: the SDK is
installed from its path next to the adapter, as a user of a checkout would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
INSTALL_TIMEOUT_S = 240

# Heavy or unrelated stacks that a default install of any package must not drag in.
SERVER_SIDE = {"isorun-hostd", "isorun-backend", "fastapi", "sqlalchemy", "alembic"}


@dataclass(frozen=True)
class Package:
    path: str
    module: str
    forbidden: frozenset[str]
    scripts: tuple[str, ...] = ()


PACKAGES = [
    Package(
        "packages/isorun-core",
        "isorun",
        frozenset({"langchain-core", "openai-agents", "anthropic", "mcp"}),
        ("isorun",),
    ),
    Package(
        "packages/isorun-langchain",
        "isorun_langchain",
        frozenset({"deepagents", "langgraph", "langchain", "langchain-anthropic"}),
    ),
    Package(
        "packages/isorun-langgraph",
        "isorun_langgraph",
        frozenset({"deepagents", "langchain-anthropic", "openai-agents"}),
    ),
    Package(
        "packages/isorun-openai-agents",
        "isorun_openai_agents",
        frozenset({"langchain-core", "anthropic"}),
    ),
    Package(
        "packages/isorun-claude",
        "isorun_claude",
        frozenset({"claude-agent-sdk", "langchain-core", "openai-agents"}),
        ("isorun-claude-worker",),
    ),
    Package(
        "packages/isorun-mcp",
        "isorun_mcp",
        frozenset({"openai-agents", "langchain-core", "anthropic"}),
        ("isorun-mcp",),
    ),
]


def uv() -> str:
    found = shutil.which("uv")
    if found is None:
        pytest.fail("uv is not on PATH: run `make setup` (scripts/setup.sh installs it)")
    return found


def run(*argv: str) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.path.rsplit("/", 1)[-1])
def test_package_installs_alone(package: Package, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    run(uv(), "venv", "--quiet", "--python", sys.executable, str(venv))
    sources = {str(ROOT / "packages/isorun-core"), str(ROOT / package.path)}
    # --no-sources: a user's install, not the workspace's editable one.
    install = (uv(), "pip", "install", "--offline", "--quiet", "--no-sources", "--python", python)
    run(*install, *sorted(sources))

    listed = json.loads(run(uv(), "pip", "list", "--python", python, "--format", "json"))
    installed = {entry["name"].lower().replace("_", "-") for entry in listed}
    unwanted = installed & (package.forbidden | SERVER_SIDE)
    assert not unwanted, f"{package.path} pulls {sorted(unwanted)}"

    run(python, "-c", f"import {package.module}")
    for script in package.scripts:
        run(str(venv / "bin" / script), "--help")
