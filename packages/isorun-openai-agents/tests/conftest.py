"""One `isorun up` for the whole session: VM tests share its API, each boots its own VM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.framework.isorun_up import Up, start_up


@pytest.fixture(scope="session")
def isorun_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with start_up(tmp_path_factory.mktemp("isorun-up")) as up:
        yield up
