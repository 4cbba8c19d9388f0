"""Fixtures of the isorun-claude tests: a sandbox over `FakeBackend`, and a real VM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from isorun import Sandbox
from isorun.testing import FakeBackend

from tests.framework.isorun_up import Up, start_up


@pytest.fixture
def fake_sandbox() -> Iterator[tuple[FakeBackend, Sandbox]]:
    fake = FakeBackend()
    with Sandbox("python", transport=fake, api_key=fake.api_key, api_url="http://fake") as sb:
        yield fake, sb


@pytest.fixture(scope="session")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`isorun up --local-images`, once for all the VM tests of this package."""
    data_dir: Path = tmp_path_factory.mktemp("isorun-claude-up")
    with start_up(data_dir) as running:
        yield running


@pytest.fixture(scope="session")
def vm(up: Up) -> Iterator[Sandbox]:
    """One real VM shared by the VM tests (each works under its own directory)."""
    with Sandbox("python", api_url=up.url, api_key=up.key) as sb:
        yield sb
