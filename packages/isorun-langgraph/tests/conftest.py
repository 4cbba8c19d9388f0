"""Fixtures: a real `isorun up` for the module's VM tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.framework.isorun_up import Up, start_up


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with start_up(Path(tmp_path_factory.mktemp("langgraph-up"))) as running:
        yield running
