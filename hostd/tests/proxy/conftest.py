"""Fixtures for the egress gateway's tests: a ``World`` of loopback doubles (proxy_support)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from isorun_hostd.net.peers import Peer
from isorun_hostd.proxy.ca import CertificateAuthority
from isorun_hostd.proxy.server import EgressGateway, GatewayLimits
from proxy_support import (
    UPSTREAM_ADDRESS,
    UPSTREAM_HOST,
    AuditLog,
    FakePKI,
    Upstream,
    World,
)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    pki = FakePKI(tmp_path)
    upstream = Upstream()
    upstream.server = await asyncio.start_server(
        upstream.handle, UPSTREAM_ADDRESS, 0, ssl=pki.server_context(UPSTREAM_HOST)
    )
    names: dict[str, tuple[str, int]] = {UPSTREAM_HOST: (UPSTREAM_ADDRESS, upstream.port)}

    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        if host not in names:
            raise OSError(f"{host} does not resolve in this test")
        return [names[host]]

    peers: dict[str, Peer] = {}
    audit = AuditLog()
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    gateway = EgressGateway(
        peers.get,
        ca,
        host="127.0.0.1",
        audit=audit,
        resolver=resolve,
        upstream_ssl=pki.client_context(),
        limits=GatewayLimits(head_timeout_s=1.0, idle_timeout_s=5.0),
    )
    await gateway.start()
    try:
        yield World(gateway, ca, pki, upstream, audit, peers, names)
    finally:
        await gateway.aclose()
        upstream.server.close()
