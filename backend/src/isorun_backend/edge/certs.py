"""The edge's TLS certificate: the one configured, or a self-signed one kept in the data folder.

The self-signed certificate names ``{domain}`` and ``*.{domain}`` (and 127.0.0.1, ::1), lasts a
year and is made again when it is due within 30 days or names another domain. Clients trust it
explicitly (its PEM is the CA file) or not at all; a browser shows a warning.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_NAME = "edge-cert.pem"
KEY_NAME = "edge-key.pem"
_LIFETIME = dt.timedelta(days=365)
_RENEW_BEFORE = dt.timedelta(days=30)


def self_signed(folder: Path, domain: str) -> tuple[Path, Path]:
    """The certificate and key files for ``domain`` in ``folder``, made if needed."""
    cert_path, key_path = folder / CERT_NAME, folder / KEY_NAME
    if _still_good(cert_path, key_path, domain):
        return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"isorun edge {domain}")])
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [
        x509.DNSName(domain),
        x509.DNSName(f"*.{domain}"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(key_path, key_pem, 0o600)
    write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def _still_good(cert_path: Path, key_path: Path, domain: str) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    due = cert.not_valid_after_utc - _RENEW_BEFORE <= dt.datetime.now(dt.UTC)
    return not due and f"*.{domain}" in names.get_values_for_type(x509.DNSName)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` aside with ``mode`` from the start, then rename: a reader never sees half
    a key, nor a key with looser permissions."""
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    partial.replace(path)
