"""A sandbox's network through the SDK and the CLI, end to end (issue 6, item 5): `isorun up`
(real VMs), the landing page's example as written, the network read back, a secret the guest
sees only as a placeholder, and the CLI's `network show|set`. What the policy lets through is
tests/integration_tests/security/test_egress.py's subject."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from isorun import Sandbox, Secret

from tests.framework.isorun_up import Up, start_up

pytestmark = pytest.mark.vm

VALUE = "sk-e2e-never-in-the-guest"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with start_up(tmp_path_factory.mktemp("isorun-up")) as running:
        yield running


def test_the_landing_page_example_and_its_network(up: Up, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISORUN_API_URL", up.url)
    monkeypatch.setenv("ISORUN_API_KEY", up.key)
    with Sandbox("python", deny=["0.0.0.0/0"], allow=["api.openai.com", "pypi.org"]) as sb:
        info = sb.network.get()
        assert (info.profile, info.allow, info.deny) == (
            "locked-down",
            ["api.openai.com", "pypi.org"],
            ["0.0.0.0/0"],
        )
        assert info.secrets == []
        assert info.drops is not None and set(info.drops) >= {"dropped", "spoofed"}

        changed = sb.network.update(allow=["pypi.org"])
        assert (changed.allow, changed.deny) == (["pypi.org"], ["0.0.0.0/0"])
        shown = up.cli("network", "show", sb.id, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["allow"] == ["pypi.org"]
        cleared = up.cli("network", "set", sb.id, "--clear-deny", "--profile", "openai")
        assert cleared.returncode == 0, cleared.stderr
        assert "profile  openai" in cleared.stdout
        assert sb.network.get().deny == []


def test_a_secret_is_a_placeholder_in_the_guest(up: Up) -> None:
    secret = Secret(
        name="OPENAI_API_KEY",
        value=VALUE,
        upstream="https://api.openai.com/v1",
        base_url_env="OPENAI_BASE_URL",
    )
    with Sandbox("python", memory_mib=256, secrets=[secret], api_url=up.url, api_key=up.key) as sb:
        env = sb.exec(["sh", "-c", 'echo "$OPENAI_API_KEY|$OPENAI_BASE_URL"']).stdout.strip()
        placeholder, base_url = env.split("|")
        assert placeholder and VALUE not in placeholder
        assert base_url.startswith("http")
        [shown] = sb.network.get().secrets
        assert (shown.name, shown.upstream, shown.base_url_env) == (
            "OPENAI_API_KEY",
            "https://api.openai.com/v1",
            "OPENAI_BASE_URL",
        )
        assert VALUE not in up.cli("network", "show", sb.id, "--json").stdout
