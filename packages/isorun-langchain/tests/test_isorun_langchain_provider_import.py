"""The dcode provider's packaging, checked where deepagents-code is absent (the 3.11 workspace).

Its behaviour is tested against real VMs, in a Python >= 3.12 venv, by
`test_isorun_langchain_provider.py`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys

import pytest


def test_entry_point_names_the_provider() -> None:
    entries = importlib.metadata.entry_points(group="deepagents_code.sandbox_providers")
    assert {entry.name: entry.value for entry in entries}["isorun"] == (
        "isorun_langchain.provider:IsorunProvider"
    )


def test_package_import_leaves_the_provider_alone() -> None:
    importlib.import_module("isorun_langchain")
    assert "isorun_langchain.provider" not in sys.modules


@pytest.mark.skipif(
    importlib.util.find_spec("deepagents_code") is not None, reason="deepagents-code is installed"
)
def test_provider_without_deepagents_code_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"pip install 'isorun-langchain\[dcode\]'"):
        importlib.import_module("isorun_langchain.provider")
