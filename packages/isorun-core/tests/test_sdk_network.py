"""A sandbox's network through the sync SDK and FakeBackend; test_sdk_async_network.py is the
twin."""

from __future__ import annotations

import json

import isorun
import pytest
from isorun import Sandbox, Secret
from isorun.testing import FakeBackend

KEY = Secret(
    name="OPENAI_API_KEY",
    value="sk-never-shown",
    upstream="https://api.openai.com/v1",
    base_url_env="OPENAI_BASE_URL",
)


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def test_the_landing_page_example_sends_the_policy(fake: FakeBackend) -> None:
    with Sandbox(
        "python",
        deny=["0.0.0.0/0"],
        allow=["api.openai.com", "pypi.org"],
        transport=fake,
        api_key=fake.api_key,
    ) as sb:
        assert fake.network_of(sb.id) == {
            "allow": ["api.openai.com", "pypi.org"],
            "deny": ["0.0.0.0/0"],
        }
        info = sb.network.get()
        assert (info.profile, info.allow, info.deny) == (
            "locked-down",
            ["api.openai.com", "pypi.org"],
            ["0.0.0.0/0"],
        )
        assert info.drops == {"dropped": 0, "spoofed": 0}


def test_no_network_option_sends_no_network(fake: FakeBackend) -> None:
    with Sandbox(transport=fake, api_key=fake.api_key) as sb:
        assert "network" not in json.loads(fake.requests[-1].content)
        assert sb.network.get().profile == "locked-down"


def test_secrets_as_objects_or_dicts_and_never_in_repr(fake: FakeBackend) -> None:
    assert "sk-never-shown" not in repr(KEY)
    as_dict = {"name": "GH_TOKEN", "value": "ghp-1", "upstream": "https://api.github.com"}
    with Sandbox(
        profile="openai", secrets=[KEY, as_dict], transport=fake, api_key=fake.api_key
    ) as sb:
        sent = fake.network_of(sb.id)
        assert sent is not None
        assert sent["profile"] == "openai"
        assert sent["secrets"] == [
            {
                "name": "OPENAI_API_KEY",
                "value": "sk-never-shown",
                "upstream": "https://api.openai.com/v1",
                "header": "Authorization: Bearer {value}",
                "base_url_env": "OPENAI_BASE_URL",
            },
            {
                "name": "GH_TOKEN",
                "value": "ghp-1",
                "upstream": "https://api.github.com",
                "header": "Authorization: Bearer {value}",
            },
        ]
        secrets = sb.network.get().secrets
        assert [(s.name, s.header_name, s.base_url_env) for s in secrets] == [
            ("OPENAI_API_KEY", "Authorization", "OPENAI_BASE_URL"),
            ("GH_TOKEN", "Authorization", None),
        ]


def test_update_replaces_only_what_it_is_given(fake: FakeBackend) -> None:
    with Sandbox(profile="openai", deny=["sentry.io"], transport=fake, api_key=fake.api_key) as sb:
        info = sb.network.update(allow=["pypi.org"])
        assert (info.profile, info.allow, info.deny) == ("openai", ["pypi.org"], ["sentry.io"])
        assert json.loads(fake.requests[-1].content) == {"allow": ["pypi.org"]}
        assert sb.network.update(profile="web-dev", deny=[]).deny == []


def test_forks_and_restores_keep_the_network(fake: FakeBackend) -> None:
    with Sandbox(allow=["pypi.org"], secrets=[KEY], transport=fake, api_key=fake.api_key) as sb:
        [clone] = sb.fork()
        snapshot = sb.snapshot()
        restored = Sandbox(snapshot=snapshot.id, transport=fake, api_key=fake.api_key)
        for other in (clone, restored):
            assert fake.network_of(other.id) == fake.network_of(sb.id)
            other.destroy()


def test_refusals_name_the_problem(fake: FakeBackend) -> None:
    with pytest.raises(isorun.InvalidRequest, match="known profiles: claude-code"):
        Sandbox(profile="nope", transport=fake, api_key=fake.api_key)
    with pytest.raises(isorun.UsageError, match="lists"):
        Sandbox(allow="pypi.org", transport=fake, api_key=fake.api_key)
    with pytest.raises(isorun.UsageError, match="name, value and upstream"):
        Sandbox(secrets=[{"name": "A", "value": "x"}], transport=fake, api_key=fake.api_key)
    assert fake.sandbox_ids == []
