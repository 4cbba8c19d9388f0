"""The isorun CA: made once with a private key, reloaded as is, signing leaves clients accept."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from isorun_hostd.proxy.ca import CA_CERT_FILE, CA_KEY_FILE, CAError, CertificateAuthority


def test_created_once_with_a_private_key_and_reloaded(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    first = CertificateAuthority.load_or_create(directory)
    assert (directory / CA_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o777 == 0o700
    again = CertificateAuthority.load_or_create(directory)
    assert again.cert_pem == first.cert_pem
    cert = x509.load_pem_x509_certificate(first.cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path)
    (tmp_path / CA_KEY_FILE).chmod(0o644)
    with pytest.raises(CAError, match="0600"):
        CertificateAuthority.load_or_create(tmp_path)


def test_a_half_written_or_mismatched_pair_is_refused(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    CertificateAuthority.load_or_create(one)
    CertificateAuthority.load_or_create(two)
    (one / CA_CERT_FILE).write_bytes((two / CA_CERT_FILE).read_bytes())
    with pytest.raises(CAError, match="not the key"):
        CertificateAuthority.load_or_create(one)
    (two / CA_CERT_FILE).unlink()
    with pytest.raises(CAError, match="missing"):
        CertificateAuthority.load_or_create(two)
    (one / CA_CERT_FILE).write_bytes(b"not pem")
    with pytest.raises(CAError, match="parse"):
        CertificateAuthority.load_or_create(one)


async def _handshake(ca: CertificateAuthority, served: str, asked: str) -> None:
    """A TLS handshake on loopback: server with ca's leaf for ``served``, client trusting ca."""
    server = await asyncio.start_server(
        lambda r, w: w.close(), "127.0.0.1", 0, ssl=ca.server_context(served)
    )
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    try:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=asked
        )
        writer.close()
    finally:
        server.close()


async def test_leaf_is_trusted_for_its_host_only(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    await _handshake(ca, "api.example.com", "api.example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(ca, "api.example.com", "other.example.com")


def test_leaf_contexts_are_cached_per_host(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    context = ca.server_context("a.example")
    assert ca.server_context("a.example") is context
    assert ca.server_context("b.example") is not context
    # The leaf's PEM passed through a scratch directory beside the CA and is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == [CA_CERT_FILE, CA_KEY_FILE]
