"""`IsorunSandboxClientOptions`: what an isorun VM is made of, as `SandboxRunConfig.options`.

The Agents SDK keeps options in a global registry keyed by `type` so that they survive a JSON
round-trip (`BaseSandboxClientOptions.parse`); ours register under "isorun". Connection
settings (API URL and key) and secrets are not options: options get serialized with run state,
and a key must never be. They go to `IsorunSandboxClient` instead.
"""

from __future__ import annotations

from typing import Literal

from agents.sandbox.session.sandbox_client import BaseSandboxClientOptions
from pydantic import Field


class IsorunSandboxClientOptions(BaseSandboxClientOptions):
    """The VM an isorun session boots (spec/api.md "Sandboxes", create).

    Attributes:
        image: A short image name ("python") or an OCI reference.
        vcpus: Virtual CPUs.
        memory_mib: Guest memory.
        timeout_s: Seconds until isorun destroys the VM unless kept alive.
        env: Environment of every process in the VM (the manifest's environment is added per
            command on top of it).
        allow: Egress allowed (host names, *.wildcards, addresses, CIDRs). With none of
            `allow`, `deny` and `profile` the VM has no network at all.
        deny: Egress denied; `allow` wins over it.
        profile: The egress profile the lists adjust ("openai", "claude-code", ...; default
            "locked-down", nothing).
        labels: Labels on the sandbox, for `isorun ls` and listing filters.
        exposed_ports: Ports in the VM that `session.resolve_exposed_port(port)` gives an
            https endpoint to (an isorun public URL, its token in the endpoint's `query`).
            Any port can be served; the SDK resolves only the ones listed here.
    """

    type: Literal["isorun"] = "isorun"
    image: str = "python"
    vcpus: int = 1
    memory_mib: int = 1024
    timeout_s: int = 1800
    env: dict[str, str] = Field(default_factory=dict)
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] | None = None
    profile: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    exposed_ports: tuple[int, ...] = ()
