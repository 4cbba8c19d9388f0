"""Default-deny egress, bypass attempts and the credential proxy, with real microVMs against a
fake internet (tests/framework/fake_internet.py: DNS and HTTP(S) on 203.0.113.0/24 in a
namespace with no default route), at hostd level. The SDK path, with the landing page's
allowlist.py, is in test_allowlist.py.

Every refused attempt must fail inside the guest and show up on the host: as a packet counted
(and logged) by the sandbox's nftables, an NXDOMAIN counted by the DNS proxy, or a refusal
counted by the egress gateway.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from isorun_hostd.config import Settings
from isorun_hostd.net.spec import EgressPolicy, NetworkSpec, SecretSpec
from isorun_hostd.sandboxes import Runtime, Sandbox

from tests.framework.fake_internet import HOST_SIDE, FakeInternet, fake_internet
from tests.framework.run import run
from tests.host_tools.leaks import network_slots

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="module")]

HOSTS = {
    "pypi.org": "203.0.113.10",
    "allowed.test": "203.0.113.20",
    "neighbour.test": "203.0.113.21",
    "example.com": "203.0.113.30",
    "api.upstream.test": "203.0.113.40",
}
SECRET = "sk-live-" + "7f3c9a1e5b" * 3
ALLOW_ONE = NetworkSpec(policy=EgressPolicy(deny=("0.0.0.0/0",), allow=("allowed.test",)))

# Run in the guest as `python3 /tmp/probe.py KIND ARGS`: prints one word, never hangs.
PROBE = r"""
import socket, struct, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
query = struct.pack(">HHHHHH", 7, 0x100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in "allowed.test".split(".")) + b"\0"
query += struct.pack(">HH", 1, 1)
family = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if kind == "tcp":
        socket.create_connection((host, port), timeout=2).close()
    elif kind == "udp":
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(query, (host, port))
        s.recvfrom(512)
    elif kind == "dns-tcp":
        s = socket.create_connection((host, port), timeout=2)
        s.settimeout(2)
        s.sendall(struct.pack(">H", len(query)) + query)
        if not s.recv(2):
            raise ConnectionError("closed")
    print("open")
except OSError as exc:
    print("blocked", type(exc).__name__)
"""


@pytest.fixture(scope="module")
def internet() -> Iterator[FakeInternet]:
    with fake_internet(HOSTS) as net:
        yield net


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net_runtime(
    internet: FakeInternet, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Runtime]:
    root = tmp_path_factory.mktemp("egress")
    ca = root / "fake-internet-ca.pem"
    ca.write_bytes(internet.ca_pem)
    settings = Settings(
        state_dir=root / "state",
        run_dir=root / "run",
        dns_upstream=internet.dns,
        guest_ca_files=[ca],
        upstream_ca_files=[ca],
    )
    runtime = Runtime(settings)
    await runtime.start()
    yield runtime
    await runtime.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def sandbox_factory(net_runtime: Runtime, python_ref: str) -> AsyncIterator[list[Sandbox]]:
    made: list[Sandbox] = []
    yield made
    await asyncio.gather(*(net_runtime.destroy(s) for s in made))


async def create(
    runtime: Runtime, ref: str, made: list[Sandbox], network: NetworkSpec | None = None
) -> Sandbox:
    sandbox = await runtime.create(ref, network=network)
    made.append(sandbox)
    await sandbox.channel.write_file("/tmp/probe.py", PROBE.encode())
    return sandbox


async def sh(sandbox: Sandbox, command: str) -> str:
    result = await run(sandbox, command, timeout_s=30)
    return (result.stdout + result.stderr).decode()


async def probe(sandbox: Sandbox, kind: str, host: str, port: int) -> str:
    return (await sh(sandbox, f"python3 /tmp/probe.py {kind} {host} {port}")).strip()


# A blocked attempt fails within BLOCKED_S; an allowed one gets longer, since a guest just
# restored or forked runs curl and OpenSSL through TCG's translation again (seconds under load).
BLOCKED_S, ALLOWED_S = 3, 20


async def curl(sandbox: Sandbox, *args: str, max_s: int = BLOCKED_S) -> tuple[int, str]:
    result = await run(sandbox, ["curl", "-sS", "-m", str(max_s), *args], timeout_s=30)
    return result.end.exit_code or 0, (result.stdout + result.stderr).decode()


async def test_a_sandbox_without_a_policy_reaches_nothing(
    net_runtime: Runtime, python_ref: str, sandbox_factory: list[Sandbox]
) -> None:
    sandbox = await create(net_runtime, python_ref, sandbox_factory)
    code, out = await curl(sandbox, "https://pypi.org/simple/")
    assert code == 6, out  # the DNS proxy answers NXDOMAIN
    code, out = await curl(sandbox, "--resolve", "pypi.org:443:203.0.113.10", "https://pypi.org/")
    assert code != 0, out
    assert await probe(sandbox, "tcp", "203.0.113.10", 8080) == "blocked TimeoutError"
    assert (await _drops(sandbox))["dropped"] > 0


async def test_an_allowed_name_works_and_every_bypass_is_blocked_and_counted(
    net_runtime: Runtime,
    internet: FakeInternet,
    python_ref: str,
    sandbox_factory: list[Sandbox],
) -> None:
    assert net_runtime.network is not None
    sandbox = await create(net_runtime, python_ref, sandbox_factory, ALLOW_ONE)
    code, out = await curl(sandbox, "https://allowed.test/", max_s=ALLOWED_S)
    assert (code, out) == (0, "hello from allowed.test\n")
    denied_before = net_runtime.network.dns.counters.denied
    refused_before = net_runtime.network.gateway.counters.denies
    dropped_before = (await _drops(sandbox))["dropped"]

    code, out = await curl(sandbox, "https://example.com/")
    assert code == 6, out  # NXDOMAIN
    # The allowed name's neighbour, by address: no name to check on 443, not admitted elsewhere.
    code, out = await curl(sandbox, "-k", "https://203.0.113.21/")
    assert code != 0, out
    assert await probe(sandbox, "tcp", "203.0.113.21", 8080) == "blocked TimeoutError"
    # A spoofed SNI or Host towards the allowed name's address.
    code, out = await curl(
        sandbox, "--resolve", "example.com:443:203.0.113.20", "https://example.com/"
    )
    assert code != 0, out
    code, out = await curl(sandbox, "-H", "Host: example.com", "http://203.0.113.20/")
    assert "not allowed" in out, out
    # DNS to another resolver, over UDP and TCP; UDP (QUIC's transport) to a closed address.
    assert await probe(sandbox, "udp", internet.dns, 53) == "blocked TimeoutError"
    assert await probe(sandbox, "dns-tcp", internet.dns, 53) == "blocked TimeoutError"
    assert await probe(sandbox, "udp", "203.0.113.21", 443) == "blocked TimeoutError"
    # Cloud metadata, IPv6.
    assert await probe(sandbox, "tcp", "169.254.169.254", 8080) == "blocked TimeoutError"
    code, out = await curl(sandbox, "http://169.254.169.254/latest/meta-data/")
    assert "not allowed" in out or code != 0, out
    assert (await probe(sandbox, "tcp", "2001:db8::1", 80)).startswith("blocked")

    assert net_runtime.network.dns.counters.denied > denied_before
    assert net_runtime.network.gateway.counters.denies > refused_before
    assert (await _drops(sandbox))["dropped"] >= dropped_before + 5
    # The drops are logged by the kernel, with the slot's name.
    assert sandbox.vm.slot is not None
    dmesg = await asyncio.to_thread(subprocess.run, ["dmesg"], capture_output=True, text=True)
    log = dmesg.stdout
    assert f"isorun drop {sandbox.vm.slot.plan.netns}: " in log


async def test_the_host_and_other_sandboxes_are_closed(
    net_runtime: Runtime, python_ref: str, sandbox_factory: list[Sandbox]
) -> None:
    everything = NetworkSpec(policy=EgressPolicy(profile="unrestricted"))
    one = await create(net_runtime, python_ref, sandbox_factory, everything)
    other = await create(net_runtime, python_ref, sandbox_factory, everything)
    await other.exec("python3 -m http.server 8000 --bind 0.0.0.0")
    assert await _until_open(other, "127.0.0.1", 8000)
    assert other.vm.slot is not None and one.vm.slot is not None
    # unrestricted opens the fake internet, and nothing of the host's or another sandbox's.
    assert (await curl(one, "http://203.0.113.30/", max_s=ALLOWED_S))[0] == 0
    with _listener() as port:
        for address in ("10.0.0.1", HOST_SIDE, str(one.vm.slot.plan.host_ip), "127.0.0.1"):
            assert (await probe(one, "tcp", address, port)).startswith("blocked"), address
    assert (await probe(one, "tcp", str(other.vm.slot.plan.ns_ip), 8000)).startswith("blocked")


async def test_policy_changes_apply_to_a_running_sandbox(
    net_runtime: Runtime, python_ref: str, sandbox_factory: list[Sandbox]
) -> None:
    sandbox = await create(net_runtime, python_ref, sandbox_factory)
    assert (await curl(sandbox, "https://allowed.test/"))[0] != 0
    spec = await net_runtime.set_policy(sandbox, ALLOW_ONE.policy)
    assert spec.policy == ALLOW_ONE.policy == sandbox.network.policy
    assert (await curl(sandbox, "https://allowed.test/", max_s=ALLOWED_S))[0] == 0
    await net_runtime.set_policy(sandbox, EgressPolicy())
    assert (await curl(sandbox, "https://allowed.test/"))[0] != 0


async def test_forks_and_resumes_keep_their_policy(
    net_runtime: Runtime, python_ref: str, sandbox_factory: list[Sandbox]
) -> None:
    source = await create(net_runtime, python_ref, sandbox_factory, ALLOW_ONE)
    (clone,) = await net_runtime.fork(source, 1)
    sandbox_factory.append(clone)
    assert clone.vm.slot is not None and source.vm.slot is not None
    assert clone.vm.slot.plan != source.vm.slot.plan
    for sandbox in (source, clone):
        assert (await curl(sandbox, "https://allowed.test/", max_s=ALLOWED_S))[0] == 0
        assert (await curl(sandbox, "https://example.com/"))[0] != 0
    await net_runtime.hibernate(clone)
    sandbox_factory.remove(clone)
    resumed = await net_runtime.resume(clone.id)
    sandbox_factory.append(resumed)
    assert resumed.network == ALLOW_ONE
    assert (await curl(resumed, "https://allowed.test/", max_s=ALLOWED_S))[0] == 0
    assert (await curl(resumed, "https://example.com/"))[0] != 0


async def test_a_secret_reaches_its_upstream_and_never_the_guest(
    net_runtime: Runtime,
    internet: FakeInternet,
    python_ref: str,
    sandbox_factory: list[Sandbox],
    tmp_path: Path,
) -> None:
    secret = SecretSpec(
        name="UPSTREAM_TOKEN",
        value=SECRET,
        upstream="https://api.upstream.test/v1",
        base_url_env="UPSTREAM_BASE_URL",
    )
    sandbox = await create(net_runtime, python_ref, sandbox_factory, NetworkSpec(secrets=(secret,)))
    # Explicit mode: the base URL points at the proxy; the guest's placeholder is replaced.
    out = await sh(
        sandbox,
        'curl -sS -m 5 -H "Authorization: Bearer $UPSTREAM_TOKEN" "$UPSTREAM_BASE_URL/models"',
    )
    assert "fake-model" in out, out
    # Transparent mode: the real URL, through the proxy's certificate the guest now trusts.
    out = await sh(sandbox, "curl -sS -m 5 https://api.upstream.test/v1/models")
    assert "fake-model" in out, out
    fetch = (
        "import urllib.request as u; print(u.urlopen('https://api.upstream.test/v1/models').read())"
    )
    assert "fake-model" in await sh(sandbox, f'python3 -c "{fetch}"')
    seen = [r for r in internet.requests() if r["host"] == "api.upstream.test"]
    assert len(seen) == 3
    assert all(r["headers"]["authorization"] == f"Bearer {SECRET}" for r in seen)
    assert all(r["path"] == "/v1/models" for r in seen)

    # Nowhere in the guest: environments, memory, disk; nor in the host's records of it.
    environ = (await run(sandbox, "cat /proc/[0-9]*/environ")).stdout
    assert b"UPSTREAM_TOKEN=isorun-placeholder" in environ
    dump = tmp_path / "guest-memory"
    await _dump_memory(sandbox, dump)
    assert dump.stat().st_size >= sandbox.vm.spec.mem_mib << 20
    places = {
        "environ": environ,
        "memory": dump.read_bytes(),
        "disk": sandbox.image.disk_path.read_bytes(),
        "console": sandbox.vm.console.tail(10_000).encode(),
        "qemu log": (sandbox.vm.paths.root / "qemu.log").read_bytes(),
        "audit chain": b"".join(
            p.read_bytes() for p in net_runtime.settings.audit_dir.iterdir() if p.is_file()
        ),
    }
    for place, data in places.items():
        assert SECRET.encode() not in data, place
    injected = [e for e in net_runtime.audit.entries(sandbox.id) if e.kind == "credential.inject"]
    assert len(injected) == 3
    assert {e.fields["secret"] for e in injected} == {"UPSTREAM_TOKEN"}


async def test_removing_a_sandbox_leaves_no_namespace_veth_or_rule(
    net_runtime: Runtime, python_ref: str
) -> None:
    before = network_slots()
    sandbox = await net_runtime.create(python_ref, network=ALLOW_ONE)
    slot = sandbox.vm.slot
    assert slot is not None
    assert slot.plan.netns_path.exists()
    assert Path(f"/sys/class/net/{slot.plan.host_veth}").exists()
    await net_runtime.destroy(sandbox)
    assert not slot.plan.netns_path.exists()
    assert not Path(f"/sys/class/net/{slot.plan.host_veth}").exists()
    after = network_slots()
    assert slot.plan.netns not in after[0] | after[2]
    assert after[0] <= before[0] | _pool_namespaces(net_runtime)
    assert net_runtime.network is not None
    assert net_runtime.network.peer(str(slot.plan.ns_ip)) is None


async def _drops(sandbox: Sandbox) -> dict[str, int]:
    assert sandbox.vm.slot is not None
    return await sandbox.vm.slot.drops()


async def _until_open(sandbox: Sandbox, host: str, port: int) -> bool:
    for _ in range(40):
        if await probe(sandbox, "tcp", host, port) == "open":
            return True
        await asyncio.sleep(0.25)
    return False


async def _dump_memory(sandbox: Sandbox, path: Path) -> None:
    """The guest's whole RAM, as the host sees it, into ``path``."""
    qmp = sandbox.vm._qmp  # the test reaches into QEMU as an attacker on the host would
    assert qmp is not None
    await qmp.execute(
        "pmemsave", {"val": 0, "size": sandbox.vm.spec.mem_mib << 20, "filename": str(path)}
    )


def _pool_namespaces(runtime: Runtime) -> set[str]:
    return {vm.slot.plan.netns for vm in runtime.pool_vms() if vm.slot is not None}


class _listener:
    """A TCP service on every address of the host, for the duration of a with block."""

    def __enter__(self) -> int:
        self.socket = socket.create_server(("0.0.0.0", 0))
        return int(self.socket.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.socket.close()
