"""A fake internet in a network namespace, for the egress tests: DNS, HTTP and HTTPS for a few
names on documentation addresses (203.0.113.0/24), reachable from the host and nowhere else.

    with fake_internet({"pypi.org": "203.0.113.10", "example.com": "203.0.113.30"}) as net:
        net.dns            # "203.0.113.53": give it to hostd as its DNS upstream
        net.ca_pem         # the CA its HTTPS certificates chain to
        net.requests()     # what its HTTP(S) servers were asked, with the headers

The namespace has no default route, so it answers on-link peers only: even with the host
forwarding, nothing it sends can go past the host. ``fake_internet`` checks that, and that the
host routes its addresses into it, before handing it out.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
NETWORK = ipaddress.IPv4Network("203.0.113.0/24")
HOST_SIDE = "203.0.113.1"
DNS_ADDRESS = "203.0.113.53"
READY_TIMEOUT_S = 20.0


@dataclass
class FakeInternet:
    netns: str
    dns: str
    hosts: dict[str, str]
    ca_pem: bytes
    log: Path

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(folder: Path, hosts: list[str]) -> tuple[bytes, dict[str, tuple[str, str]]]:
    """A CA and a certificate per host signed by it: the CA's PEM and (cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("isorun fake internet CA"))
        .issuer_name(_name("isorun fake internet CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths: dict[str, tuple[str, str]] = {}
    for host in hosts:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(host))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = folder / f"{host}.crt", folder / f"{host}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        paths[host] = (str(cert_path), str(key_path))
    return ca.public_bytes(serialization.Encoding.PEM), paths


@contextlib.contextmanager
def fake_internet(hosts: dict[str, str]) -> Iterator[FakeInternet]:
    """Serve ``hosts`` (name -> address in 203.0.113.0/24) until the block ends."""
    for name, address in hosts.items():
        if ipaddress.IPv4Address(address) not in NETWORK or address in (HOST_SIDE, DNS_ADDRESS):
            raise ValueError(f"{name}: {address} must be a free address in {NETWORK}")
    tag = secrets.token_hex(3)
    netns, host_if = f"isr-fake-{tag}", f"fake-{tag}"
    with tempfile.TemporaryDirectory(prefix="isr-fake-") as tmp:
        folder = Path(tmp)
        ca_pem, certs = _issue(folder, list(hosts))
        config = folder / "config.json"
        log = folder / "requests.jsonl"
        config.write_text(
            json.dumps({"dns": DNS_ADDRESS, "hosts": hosts, "certs": certs, "log": str(log)})
        )
        _ip("netns", "add", netns)
        server: subprocess.Popen[str] | None = None
        try:
            _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("addr", "add", f"{HOST_SIDE}/24", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            for address in (DNS_ADDRESS, *hosts.values()):
                _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _check_contained(netns, host_if, next(iter(hosts.values())))
            server = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, "-m",
                 "tests.framework.fake_internet_server", str(config)],
                cwd=REPO, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("the fake internet's servers did not start")
            yield FakeInternet(netns, DNS_ADDRESS, dict(hosts), ca_pem, log)
        finally:
            if server is not None:
                server.kill()
                server.wait()
            subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)
            subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)


def _check_contained(netns: str, host_if: str, address: str) -> None:
    """The namespace must not route anywhere but its link, and the host must route the fake
    addresses into it: else a test could talk to the real internet."""
    routes = _ip("-n", netns, "-4", "route", "show")
    if "default" in routes:
        raise RuntimeError(f"{netns} has a default route; it would reach past the host")
    route = _ip("route", "get", address)
    if f"dev {host_if}" not in route:
        raise RuntimeError(f"the host routes {address} via {route.strip()!r}, not {host_if}")
