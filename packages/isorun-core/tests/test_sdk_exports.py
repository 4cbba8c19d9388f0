"""The public surface: `__all__` is sorted and complete, and the library logs politely."""

from __future__ import annotations

import logging

import isorun


def test_all_is_sorted_and_every_name_is_importable() -> None:
    # isort-style, as ruff keeps it (RUF022): constants first, then classes.
    assert isorun.__all__ == sorted(isorun.__all__, key=lambda name: (not name.isupper(), name))
    assert len(set(isorun.__all__)) == len(isorun.__all__)
    for name in isorun.__all__:
        assert getattr(isorun, name) is not None, name


def test_every_public_class_and_error_is_exported() -> None:
    public = {
        name
        for name, value in vars(isorun).items()
        if isinstance(value, type) and not name.startswith("_")
    }
    assert public <= set(isorun.__all__)


def test_errors_form_one_tree() -> None:
    errors = [getattr(isorun, n) for n in isorun.__all__ if n.endswith(("Error", "Exceeded"))]
    assert all(issubclass(error, isorun.IsorunError) for error in errors)
    assert issubclass(isorun.SandboxNotFound, isorun.NotFound)
    assert issubclass(isorun.ExecTimeout, isorun.ExecFailed)


def test_library_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("isorun").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
