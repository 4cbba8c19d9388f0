"""The network options of an isorun session reach the API (FakeBackend, no VM); secrets come
from the client and never sit in the options serialized with run state."""

from __future__ import annotations

import isorun
from isorun.testing import FakeBackend
from isorun_openai_agents import IsorunSandboxClient, IsorunSandboxClientOptions


async def test_create_sends_the_policy_and_the_clients_secrets() -> None:
    fake = FakeBackend()
    secret = isorun.Secret(name="OPENAI_API_KEY", value="sk-1", upstream="https://api.openai.com")
    client = IsorunSandboxClient(api_key=fake.api_key, transport=fake, secrets=[secret])
    options = IsorunSandboxClientOptions(allow=("pypi.org",), deny=("0.0.0.0/0",), profile="openai")
    session = await client.create(options=options)
    try:
        [sandbox_id] = fake.sandbox_ids
        sent = fake.network_of(sandbox_id)
        assert sent is not None
        assert (sent["allow"], sent["deny"], sent["profile"]) == (
            ["pypi.org"],
            ["0.0.0.0/0"],
            "openai",
        )
        assert sent["secrets"][0]["value"] == "sk-1"
        assert "sk-1" not in options.model_dump_json()
        assert "secrets" not in IsorunSandboxClientOptions.model_fields
    finally:
        await client.delete(session)
