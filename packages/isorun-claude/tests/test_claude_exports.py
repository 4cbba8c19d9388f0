"""The public names of `isorun_claude`."""

import isorun_claude


def test_all_is_sorted_and_complete() -> None:
    assert isorun_claude.__all__ == sorted(isorun_claude.__all__)
    assert isorun_claude.__all__ == [
        "IsorunBashTool",
        "IsorunTextEditorTool",
        "isorun_agent_toolset",
        "sandbox_tools",
    ]
    for name in isorun_claude.__all__:
        assert getattr(isorun_claude, name).__module__.startswith("isorun_claude.")
