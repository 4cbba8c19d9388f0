"""The isorun CA: the one authority the egress gateway signs per-host certificates with.

Transparent credential mode terminates the guest's TLS for the hosts its secrets are bound to,
so the guest must trust this CA (the image or the SDK installs ``cert_pem``). The CA is created
once under a state directory and reused across restarts, so an image that trusts it keeps
working::

    <state_dir>/            0700
      ca.key                0600  PEM, PKCS#8, EC P-256 (never leaves the host)
      ca.crt                0644  PEM, self-signed, CA:TRUE pathlen:0, 10 years

Leaf certificates are made in memory, on demand, one per host (SAN = that host), with one EC
key per process; each becomes a ready server ``ssl.SSLContext`` kept in a small LRU cache until
a day before it expires. ``ssl`` loads certificates only from files, so a leaf's PEM passes
through a 0600 file in a 0700 directory beside the CA, removed as soon as it is loaded.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
CA_COMMON_NAME = "isorun sandbox egress CA"
CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=30)
# Regenerate a cached leaf this long before it expires, so no handshake sees a stale one.
LEAF_RENEW_MARGIN = datetime.timedelta(days=1)
# Clocks in fresh guests can lag the host's; back-date what we sign.
CLOCK_SKEW = datetime.timedelta(hours=1)
LEAF_CACHE_SIZE = 256


class CAError(Exception):
    """the isorun CA under {path} is unusable: {reason}"""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"the isorun CA under {path} is unusable: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True)
class _Leaf:
    context: ssl.SSLContext
    renew_at: datetime.datetime


class CertificateAuthority:
    """The CA key and certificate, and the per-host server contexts signed with them.

    Example::

        ca = CertificateAuthority.load_or_create(settings.state_dir / "egress-ca")
        guest_trust = ca.cert_pem
        context = ca.server_context("api.openai.com")
    """

    def __init__(
        self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
    ) -> None:
        self.directory = directory
        self._key = key
        self._cert = cert
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_key_pem = _private_pem(self._leaf_key)
        self._leaves: OrderedDict[str, _Leaf] = OrderedDict()

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        """Load the CA kept in ``directory``, or create it there on first use.

        Raises:
            CAError: only one of the two files exists, a file does not parse, the key is not
                the certificate's, or the key file is readable by others.
        """
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if not key_path.exists() and not cert_path.exists():
            return cls._create(directory)
        if not (key_path.exists() and cert_path.exists()):
            raise CAError(directory, f"one of {CA_KEY_FILE} and {CA_CERT_FILE} is missing")
        if key_path.stat().st_mode & 0o077:
            raise CAError(directory, f"{CA_KEY_FILE} must be readable by its owner only (0600)")
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError as exc:
            raise CAError(directory, f"does not parse: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or _spki(key.public_key()) != _spki(
            cert.public_key()
        ):
            raise CAError(directory, f"{CA_KEY_FILE} is not the key of {CA_CERT_FILE}")
        return cls(directory, key, cert)

    @classmethod
    def _create(cls, directory: Path) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        # The certificate goes last: its presence is what marks the pair complete.
        _write_new(directory / CA_KEY_FILE, _private_pem(key), 0o600)
        _write_new(directory / CA_CERT_FILE, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(directory, key, cert)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate as PEM, for the guest's trust store."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a certificate for ``host`` (a DNS name or an IP)."""
        now = datetime.datetime.now(datetime.UTC)
        leaf = self._leaves.get(host)
        if leaf is not None and now < leaf.renew_at:
            self._leaves.move_to_end(host)
            return leaf.context
        cert = self._sign_leaf(host, now)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The gateway speaks HTTP/1.1 to the guest; announcing only it keeps clients off h2.
        context.set_alpn_protocols(["http/1.1"])
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem
        with tempfile.TemporaryDirectory(prefix="leaf-", dir=self.directory) as scratch:
            pem = Path(scratch) / "leaf.pem"
            _write_new(pem, self._leaf_key_pem + chain, 0o600)
            context.load_cert_chain(pem)
        self._leaves[host] = _Leaf(context, cert.not_valid_after_utc - LEAF_RENEW_MARGIN)
        self._leaves.move_to_end(host)
        while len(self._leaves) > LEAF_CACHE_SIZE:
            self._leaves.popitem(last=False)
        return context

    def _sign_leaf(self, host: str, now: datetime.datetime) -> x509.Certificate:
        san: x509.GeneralName
        try:
            san = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + LEAF_VALIDITY, self._cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._leaf_key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )


def _spki(key: ec.EllipticCurvePublicKey | CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never write through a file or link someone else placed there first.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates only; a TLS 1.2+ ECDHE leaf signs handshakes only."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
