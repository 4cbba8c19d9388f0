"""The landing page's allowlist.py, verbatim below this docstring: default-deny egress with two
names opened.

    ISORUN_API_URL=... ISORUN_API_KEY=... uv run python examples/allowlist.py

It needs an isorun whose sandboxes can reach api.openai.com and pypi.org (and example.com, to be
refused); tests/integration_tests/security/test_allowlist.py runs it against a fake internet.
"""
# fmt: off

from isorun import Sandbox

with Sandbox(
    "python",
    deny=["0.0.0.0/0"],                      # block everything
    allow=["api.openai.com", "pypi.org"],    # …except these
) as sb:
    sb.exec("pip install openai")                   # works
    sb.exec("curl https://api.openai.com/v1/models")  # works
    out = sb.exec("curl -m 2 https://example.com")
    assert out.exit_code != 0                   # blocked
