"""Fixtures of the isorun-claude tests: a sandbox over `FakeBackend`, and a real VM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from isorun import Sandbox
from isorun.testing import FakeBackend

from tests.framework.isorun_up import start_up


@pytest.fixture
def fake_sandbox() -> Iterator[tuple[FakeBackend, Sandbox]]:
    fake = FakeBackend()
    with Sandbox("python", transport=fake, api_key=fake.api_key, api_url="http://fake") as sb:
        yield fake, sb


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One real VM for the module, behind `isorun up --local-images`."""
    data_dir: Path = tmp_path_factory.mktemp("isorun-claude-up")
    with start_up(data_dir) as up, Sandbox("python", api_url=up.url, api_key=up.key) as sb:
        yield sb
