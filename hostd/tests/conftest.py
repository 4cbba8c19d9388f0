"""Session fixtures shared by hostd's tests: a loopback registry holding the fixture images.

`registry` starts one plain registry for the session with every light fixture image pushed
(building them is cached per machine and takes about a second). Tests that need the python image
use `python_image_ref`, which builds it on first use (debootstrap, about 40 s once per machine)
and pushes it; mark them `python_image` so `-m "not python_image"` can leave them out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.build import build_python
from tests.framework.registry import Registry, registry_with_fixtures


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "python_image: needs the debootstrap python fixture (about 40 s once per machine)",
    )


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    with registry_with_fixtures() as running:
        yield running


@pytest.fixture(scope="session")
def python_image_ref(registry: Registry) -> str:
    image = build_python()
    registry.push_image(image)
    return registry.ref(image.name_tag)
