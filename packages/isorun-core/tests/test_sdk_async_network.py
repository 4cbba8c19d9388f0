"""A sandbox's network through the async SDK and FakeBackend; the twin of test_sdk_network.py."""

from __future__ import annotations

import isorun
import pytest
from isorun import AsyncSandbox, Sandbox, Secret
from isorun.testing import FakeBackend

KEY = Secret(name="OPENAI_API_KEY", value="sk-never-shown", upstream="https://api.openai.com/v1")


async def test_create_get_and_update() -> None:
    fake = FakeBackend()
    async with Sandbox.create(
        "python",
        deny=["0.0.0.0/0"],
        allow=["api.openai.com"],
        secrets=[KEY],
        transport=fake,
        api_key=fake.api_key,
    ) as sb:
        sent = fake.network_of(sb.id)
        assert sent is not None and sent["secrets"][0]["value"] == "sk-never-shown"
        info = await sb.network.get()
        assert (info.allow, info.deny) == (["api.openai.com"], ["0.0.0.0/0"])
        assert [s.name for s in info.secrets] == ["OPENAI_API_KEY"]
        updated = await sb.network.update(allow=["pypi.org"], profile="openai")
        assert (updated.profile, updated.allow, updated.deny) == (
            "openai",
            ["pypi.org"],
            ["0.0.0.0/0"],
        )


async def test_refusals_name_the_problem() -> None:
    fake = FakeBackend()
    with pytest.raises(isorun.InvalidRequest, match="known profiles"):
        await AsyncSandbox.create(profile="nope", transport=fake, api_key=fake.api_key)
    async with AsyncSandbox.create(transport=fake, api_key=fake.api_key) as sb:
        with pytest.raises(isorun.UsageError, match="lists"):
            await sb.network.update(deny="0.0.0.0/0")
