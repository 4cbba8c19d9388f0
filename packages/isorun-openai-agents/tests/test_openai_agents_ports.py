"""Exposed ports of an isorun session: `resolve_exposed_port` gives an isorun public URL as the
SDK's `ExposedPortEndpoint` (the edge's host and port, TLS, the token as the query).

Over `FakeBackend` (no VM): the mapping, the state keeping the ports, and the SDK's errors. In a
real VM (`isorun up`): a server the session starts on the guest's loopback answers at
`endpoint.url_for("http")`.
"""

from __future__ import annotations

import ssl

import httpx
import pytest
from agents.sandbox import ExposedPortEndpoint
from agents.sandbox.errors import ExposedPortUnavailableError
from isorun.testing import FakeBackend
from isorun_openai_agents import (
    IsorunSandboxClient,
    IsorunSandboxClientOptions,
    IsorunSandboxSession,
)

from tests.framework.guest_servers import serve_folder
from tests.framework.isorun_up import Up

PORT = 8000
SERVE = serve_folder(PORT, "from-the-agent.txt")
FETCH_TIMEOUT_S = 120.0


async def test_an_exposed_port_resolves_to_the_urls_endpoint() -> None:
    fake = FakeBackend()
    client = IsorunSandboxClient(api_key=fake.api_key, transport=fake)
    session = await client.create(options=IsorunSandboxClientOptions(exposed_ports=(PORT,)))
    inner = session._inner
    assert isinstance(inner, IsorunSandboxSession)
    sandbox_id = inner.state.sandbox_id
    try:
        assert inner.state.exposed_ports == (PORT,)
        restored = client.deserialize_session_state(inner.state.model_dump(mode="json"))
        assert restored.exposed_ports == (PORT,)

        endpoint = await session.resolve_exposed_port(PORT)
        assert isinstance(endpoint, ExposedPortEndpoint)
        assert (endpoint.host, endpoint.port, endpoint.tls) == (
            f"{PORT}-{sandbox_id}.isorun.localhost",
            443,
            True,
        )
        assert endpoint.query.startswith("isorun_token=fake-")
        assert endpoint.url_for("http") == (
            f"https://{PORT}-{sandbox_id}.isorun.localhost/?{endpoint.query}"
        )

        with pytest.raises(ExposedPortUnavailableError) as not_listed:
            await session.resolve_exposed_port(9000)
        assert not_listed.value.context["reason"] == "not_configured"
    finally:
        await client.delete(session)
    with pytest.raises(ExposedPortUnavailableError) as gone:
        await session.resolve_exposed_port(PORT)
    assert gone.value.context["reason"] == "backend_unavailable"


@pytest.mark.vm
@pytest.mark.timeout(600)
async def test_a_server_in_the_vm_answers_at_its_endpoint(isorun_api: Up) -> None:
    client = IsorunSandboxClient(api_url=isorun_api.url, api_key=isorun_api.key)
    options = IsorunSandboxClientOptions(image="python", memory_mib=512, exposed_ports=(PORT,))
    session = await client.create(options=options)
    inner = session._inner
    assert isinstance(inner, IsorunSandboxSession)
    async with session:
        started = await session.exec(SERVE, timeout=180)
        assert started.ok(), started.stderr

        endpoint = await session.resolve_exposed_port(PORT)
        assert endpoint.host == f"{PORT}-{inner.state.sandbox_id}.isorun.localhost"
        assert (endpoint.port, endpoint.tls) == (isorun_api.edge_port, True)
        tls = ssl.create_default_context(cafile=isorun_api.data_dir / "edge" / "edge-cert.pem")
        async with httpx.AsyncClient(verify=tls, trust_env=False, timeout=FETCH_TIMEOUT_S) as http:
            answer = await http.get(endpoint.url_for("http"))
        assert answer.status_code == 200, answer.text
        assert "Directory listing for /" in answer.text and "from-the-agent.txt" in answer.text
