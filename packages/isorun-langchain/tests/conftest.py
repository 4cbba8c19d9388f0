"""One `isorun up` and one VM for the whole package's VM tests: each boot is seconds under TCG."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from isorun import Sandbox

from tests.framework.isorun_up import Up, start_up


@pytest.fixture(scope="session")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data_dir: Path = tmp_path_factory.mktemp("isorun-langchain-up")
    with start_up(data_dir) as running:
        yield running


@pytest.fixture(scope="session")
def vm(up: Up) -> Iterator[Sandbox]:
    # Generous HTTP timeout: the build machine's cores are shared with other VM tests.
    with Sandbox("python", api_url=up.url, api_key=up.key, timeout=120) as sandbox:
        yield sandbox
