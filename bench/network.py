"""Network figures for hostd: the egress gateway's added latency, policy changes, slot set-up.

    uv run python -m bench.network [--requests 200] [--changes 20] [--opens 10]
                                   [--json bench/results/network.json]

Proxy latency, all on loopback, no VM: a fake HTTPS upstream (127.0.0.3, an asyncio server
answering every GET with a 2-byte JSON body; certificates from the fake internet's CA maker)
and an ``EgressGateway`` (127.0.0.1) run on this process's event loop; the client is a second
process (``--client``, so it never waits for this one's GIL), a blocking raw socket per route,
one HTTP/1.1 keep-alive connection each, TCP_NODELAY, reading the head and then Content-Length
bytes. A request's time is ``perf_counter`` from ``sendall`` of the request to the last byte
of the body:

    direct_ms        client --TLS--> upstream
    explicit_ms      client (127.0.0.2) --HTTP--> gateway /s/BENCH_KEY/... --TLS--> upstream,
                     Authorization injected (the credential proxy's explicit route)
    transparent_ms   client (127.0.0.2) --TLS, SNI api.upstream.test--> gateway (isorun CA
                     leaf) --TLS--> upstream, header injected (transparent route)
    spliced_ms       client (127.0.0.2) --TLS, SNI allowed.test--> gateway (SNI read, policy,
                     resolve, connect once) --spliced bytes--> upstream
    *_added_ms       each route's p50 (and p99) minus direct's: what the gateway adds

The gateway's ``PeerLookup`` maps 127.0.0.2 to a peer with the secret and a stand-in policy
allowing allowed.test (a real CompiledPolicy never admits loopback); its resolver maps both
names to the upstream; its audit sink is a no-op. The four connections take turns, one request
each per round, after a warm-up of 20 rounds (by then the gateway holds the upstream
connection it keeps for each guest connection), so drift hits them alike. Explicit mode spares
the client its TLS (a few us) that direct pays; transparent and spliced carry the same client
TLS as direct.

Policy changes, on hostd's Runtime (templates off, python fixture image, 1 vCPU, 256 MiB) with
a fake internet (tests/framework/fake_internet.py) as its DNS upstream:
  set_policy_ms    ``Runtime.set_policy`` on a running sandbox, alternating an allowlist of
                   allowed.test and no egress (nft set replacement in the sandbox's namespace)
  guest_check      ``curl https://allowed.test/`` in the guest, its exit code with no egress
                   and right after the allowlist is set (6 then 0: the change took effect)
  slot_open_ms     ``Slot.open``: namespace, veth, tap, nft ruleset (what every new VM pays)
  slot_close_ms    ``Slot.close`` of those slots
and the accelerator (KVM or TCG), which matters to the guest check only.
Prints figures; asserts only that the gateway injected on every credential-route request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from isorun_hostd.config import Settings
from isorun_hostd.net.apply import Slot
from isorun_hostd.net.host import slot_sets
from isorun_hostd.net.peers import Peer
from isorun_hostd.net.policy import CompiledPolicy
from isorun_hostd.net.spec import EgressPolicy, SecretSpec
from isorun_hostd.proxy.ca import CertificateAuthority
from isorun_hostd.proxy.server import EgressGateway
from isorun_hostd.sandboxes import Runtime, Sandbox

from bench.boot import IMAGE, environment, print_table, summary, write_json
from bench.snapshots import ms_since
from tests.framework.fake_internet import _issue, fake_internet
from tests.framework.registry import registry_with_fixtures
from tests.framework.run import run

PROXY_METRICS = ("direct_ms", "explicit_ms", "transparent_ms", "spliced_ms")
POLICY_METRICS = ("set_policy_ms", "slot_open_ms", "slot_close_ms")
GOAL_ADDED_P50_MS = 0.4
WARMUP_ROUNDS = 20

GATEWAY = "127.0.0.1"
GUEST = "127.0.0.2"
UPSTREAM = "127.0.0.3"
UPSTREAM_HOST = "api.upstream.test"
ALLOWED_HOST = "allowed.test"
SECRET = "BENCH_KEY"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

ALLOW_ONE = EgressPolicy(deny=("0.0.0.0/0",), allow=(ALLOWED_HOST,))
NO_EGRESS = EgressPolicy()
INTERNET = {ALLOWED_HOST: "203.0.113.20"}


# --- proxy latency ---------------------------------------------------------------------------


class BenchPolicy:
    """The questions the gateway asks a peer's policy: allowed.test only, loopback admitted."""

    def allows_name(self, name: str) -> bool:
        return name == ALLOWED_HOST

    def allows_address(self, ip: str) -> bool:
        return False

    def admits(self, ip: str) -> bool:
        return ip == UPSTREAM


async def _never_admit(addresses: Sequence[str], ttl_s: int) -> None:
    raise AssertionError("the gateway opens no nftables sets")


class Connection:
    """One blocking HTTP/1.1 keep-alive connection; ``get`` returns the body."""

    def __init__(
        self,
        port: int,
        *,
        address: str,
        source: str | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        host_header: str,
    ) -> None:
        raw = socket.create_connection(
            (address, port), timeout=10, source_address=(source, 0) if source else None
        )
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = tls.wrap_socket(raw, server_hostname=server_name) if tls else raw
        self.host_header = host_header
        self.buffer = b""

    def get(self, target: str) -> bytes:
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {self.host_header}\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"{self.host_header}{target}: {head.decode(errors='replace')}")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"content-length:")
        )
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def timed_get(self, target: str) -> float:
        started = time.perf_counter()
        self.get(target)
        return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.sock.close()


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each GET head with RESPONSE until the client goes."""
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def client(config_path: Path) -> int:
    """The client process: ``config_path`` names the four routes; prints the figures as JSON."""
    config = json.loads(config_path.read_text())
    trust = {name: ssl.create_default_context(cadata=pem) for name, pem in config["trust"].items()}
    connections = {
        name: Connection(
            route["port"],
            address=route["address"],
            source=route["source"],
            tls=trust[route["trust"]] if route["trust"] else None,
            server_name=route["server_name"],
            host_header=route["host_header"],
        )
        for name, route in config["routes"].items()
    }
    figures: dict[str, list[float]] = {name: [] for name in connections}
    for round_ in range(config["warmup_rounds"] + config["requests"]):
        for name, connection in connections.items():
            elapsed = connection.timed_get(config["routes"][name]["target"])
            if round_ >= config["warmup_rounds"]:
                figures[name].append(elapsed)
    for connection in connections.values():
        connection.close()
    print(json.dumps(figures))
    return 0


def route(
    port: int,
    target: str,
    *,
    address: str = GATEWAY,
    source: str | None = GUEST,
    trust: str | None = None,
    server_name: str | None = None,
    host_header: str,
) -> dict[str, object]:
    return {
        "port": port,
        "target": target,
        "address": address,
        "source": source,
        "trust": trust,
        "server_name": server_name,
        "host_header": host_header,
    }


async def proxy_latency(folder: Path, requests: int) -> dict[str, list[float]]:
    """Serve the upstream and the gateway here while a client process times the routes."""
    fake_ca_pem, certs = _issue(folder, [UPSTREAM_HOST, ALLOWED_HOST])
    contexts = {}
    for host, (cert, key) in certs.items():
        contexts[host] = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        contexts[host].load_cert_chain(cert, key)

    def by_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        sock.context = contexts[name or UPSTREAM_HOST]

    server_ssl = contexts[UPSTREAM_HOST]
    server_ssl.sni_callback = by_sni
    ca = CertificateAuthority.load_or_create(folder / "proxy-ca")
    secret = SecretSpec.model_validate(
        {"name": SECRET, "value": "bench-value", "upstream": f"https://{UPSTREAM_HOST}/v1"}
    )
    peer = Peer("sbx-bench", cast(CompiledPolicy, BenchPolicy()), (secret,), _never_admit)

    upstream = await asyncio.start_server(_upstream, UPSTREAM, 0, ssl=server_ssl)
    port = int(upstream.sockets[0].getsockname()[1])

    async def resolve(host: str, _: int) -> list[tuple[str, int]]:
        if host not in certs:
            raise OSError(f"{host} does not resolve here")
        return [(UPSTREAM, port)]

    gateway = EgressGateway(
        {GUEST: peer}.get,
        ca,
        host=GATEWAY,
        resolver=resolve,
        upstream_ssl=ssl.create_default_context(cadata=fake_ca_pem.decode()),
    )
    await gateway.start()
    config = folder / "client.json"
    http, tls = gateway.http_port, gateway.tls_port
    config.write_text(
        json.dumps(
            {
                "requests": requests,
                "warmup_rounds": WARMUP_ROUNDS,
                "trust": {"fake": fake_ca_pem.decode(), "isorun": ca.cert_pem.decode()},
                "routes": {
                    "direct_ms": route(
                        port,
                        "/v1/models",
                        address=UPSTREAM,
                        source=None,
                        trust="fake",
                        server_name=UPSTREAM_HOST,
                        host_header=UPSTREAM_HOST,
                    ),
                    "explicit_ms": route(http, f"/s/{SECRET}/models", host_header="10.0.0.1"),
                    "transparent_ms": route(
                        tls,
                        "/v1/models",
                        trust="isorun",
                        server_name=UPSTREAM_HOST,
                        host_header=UPSTREAM_HOST,
                    ),
                    "spliced_ms": route(
                        tls,
                        "/v1/models",
                        trust="fake",
                        server_name=ALLOWED_HOST,
                        host_header=ALLOWED_HOST,
                    ),
                },
            }
        )
    )
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.network",
            "--client",
            str(config),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"the client process failed ({process.returncode})")
        assert gateway.counters.injections == 2 * (WARMUP_ROUNDS + requests)
    finally:
        await gateway.aclose()
        upstream.close()
        await upstream.wait_closed()
    figures: dict[str, list[float]] = json.loads(out)
    return figures


def added(figures: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each route's p50 and p99 minus direct's."""
    base = figures["direct_ms"]
    return {
        name.replace("_ms", "_added_ms"): {
            q: round(figures[name][q] - base[q], 3) for q in ("p50", "p99")
        }
        for name in PROXY_METRICS[1:]
    }


# --- policy changes and slots ----------------------------------------------------------------


async def curl_exit(sandbox: Sandbox) -> int:
    result = await run(sandbox, ["curl", "-sS", "-m", "5", f"https://{ALLOWED_HOST}/"])
    return result.end.exit_code or 0


async def policy_changes(
    reference: str, settings: Settings, changes: int, opens: int
) -> dict[str, object]:
    figures: dict[str, list[float]] = {name: [] for name in POLICY_METRICS}
    runtime = Runtime(settings)
    await runtime.start()
    try:
        network = runtime.network
        assert network is not None
        sandbox = await runtime.create(reference)
        before = await curl_exit(sandbox)
        for index in range(changes):
            # Ends on NO_EGRESS for an even count, so the allowlist below is a change again.
            policy = ALLOW_ONE if index % 2 == 0 else NO_EGRESS
            started = time.perf_counter()
            await runtime.set_policy(sandbox, policy)
            figures["set_policy_ms"].append(ms_since(started))
        await runtime.set_policy(sandbox, ALLOW_ONE)
        after = await curl_exit(sandbox)
        await runtime.destroy(sandbox)

        locked_down = slot_sets(network.compile(NO_EGRESS))
        for _ in range(opens):
            started = time.perf_counter()
            slot = await Slot.open(network.ports, locked_down)
            figures["slot_open_ms"].append(ms_since(started))
            started = time.perf_counter()
            await slot.close()
            figures["slot_close_ms"].append(ms_since(started))
        caps = runtime.caps
    finally:
        await runtime.aclose()
    return {
        **environment(caps),
        "image": IMAGE,
        "vm": {"vcpus": 1, "mem_mib": 256},
        **{name: summary(values) for name, values in figures.items()},
        "guest_check": {"curl_exit_no_egress": before, "curl_exit_allowlist": after},
    }


def measure(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    with fake_internet(INTERNET) as internet, registry_with_fixtures(python=True) as registry:
        ca = folder / "fake-internet-ca.pem"
        ca.write_bytes(internet.ca_pem)
        settings = Settings(
            state_dir=folder / "state",
            run_dir=folder / "run",
            dns_upstream=internet.dns,
            guest_ca_files=[ca],
            upstream_ca_files=[ca],
            templates=False,
            restore_pool_size=0,
        )
        result = asyncio.run(
            policy_changes(registry.ref(IMAGE), settings, args.changes, args.opens)
        )
    latency = asyncio.run(proxy_latency(folder, args.requests))
    proxy = {name: summary(latency[name]) for name in PROXY_METRICS}
    return {
        **result,
        "proxy": {"goal_added_p50_ms": GOAL_ADDED_P50_MS, "warmup_rounds": WARMUP_ROUNDS},
        **proxy,
        **added(proxy),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--opens", type=int, default=10)
    parser.add_argument("--json", type=Path, default=Path("bench/results/network.json"))
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client(args.client)
    with tempfile.TemporaryDirectory(prefix="isorun-bench-") as tmp:
        result = measure(args, Path(tmp))
    print_table(result, (*PROXY_METRICS, *POLICY_METRICS))
    for name in ("explicit_added_ms", "transparent_added_ms", "spliced_added_ms"):
        print(f"{name:<22}{result[name]}  (goal p50 <= {GOAL_ADDED_P50_MS} ms)")
    print("guest_check", result["guest_check"])
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
