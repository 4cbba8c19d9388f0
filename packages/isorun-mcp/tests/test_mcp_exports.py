"""`isorun_mcp.__all__` is sorted and names only what the package exports."""

import isorun_mcp


def test_all_is_sorted_and_importable() -> None:
    assert isorun_mcp.__all__ == sorted(isorun_mcp.__all__)
    assert all(hasattr(isorun_mcp, name) for name in isorun_mcp.__all__)
