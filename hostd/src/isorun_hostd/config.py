"""hostd's settings: the one place that reads the environment (prefix ``ISORUN_``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]


class RegistryLogin(BaseModel):
    username: str
    password: str


class Settings(BaseSettings):
    """hostd configuration.

    Example: ``ISORUN_STATE_DIR=/srv/isorun ISORUN_ACCEL=tcg isorun-hostd doctor``.
    """

    model_config = SettingsConfigDict(env_prefix="ISORUN_", env_nested_delimiter="__")

    state_dir: Path = Field(
        default=Path("/var/lib/isorun"),
        description="persistent state: image cache, boot files, probe results",
    )
    run_dir: Path = Field(
        default=Path("/run/isorun"),
        description="one folder per running VM (sockets, QEMU log); short, for socket paths",
    )
    agent_path: Path = Field(
        default=REPO_ROOT / "agent" / "bin" / "isorun-agent",
        description="the static guest agent binary (make agent)",
    )
    kernel_path: Path | None = Field(
        default=None, description="guest kernel bzImage or ELF; default: newest /boot/vmlinuz-*"
    )
    modules_dir: Path | None = Field(
        default=None, description="the guest kernel's modules; default: /lib/modules/<release>"
    )
    qemu_binary: str = "qemu-system-x86_64"
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    registry_logins: dict[str, RegistryLogin] = Field(
        default_factory=dict, description='per registry host, e.g. {"ghcr.io": {...}}'
    )
    insecure_registries: list[str] = Field(
        default_factory=list, description="hosts that may be reached over plain HTTP"
    )
    image_tag_ttl_s: float = Field(
        default=60.0,
        ge=0,
        description="seconds a tag's resolution (tag -> manifest digest) is reused before a "
        "create asks the registry again; 0: every create asks",
    )
    boot_timeout_s: float = 60.0
    node_token: SecretStr | None = Field(
        default=None,
        description="bearer token the backend presents to `isorun-hostd serve`; required there",
    )
    capacity_vcpus: int | None = Field(
        default=None, gt=0, description="vCPUs this node hands out; default: host CPUs x 8"
    )
    capacity_memory_mib: int | None = Field(
        default=None, gt=0, description="guest memory this node hands out; default: host RAM"
    )

    network: bool = Field(
        default=True,
        description="give every sandbox a NIC in a namespace of its own with default-deny "
        "egress (docs/network.md); false: sandboxes have no network at all",
    )
    guest_ca_files: list[Path] = Field(
        default_factory=list,
        description="PEM certificates every guest trusts besides the image's own, e.g. a "
        "corporate TLS proxy's CA (the credential proxy's CA is added when a sandbox has secrets)",
    )
    upstream_ca_files: list[Path] = Field(
        default_factory=list,
        description="PEM certificates the credential proxy trusts for upstreams besides the "
        "host's trust store",
    )
    egress_profiles_path: Path | None = Field(
        default=None,
        description="JSON or TOML file of extra egress profiles, or ones replacing a built-in "
        "(docs/network.md); checked at start",
    )
    dns_upstream: str | None = Field(
        default=None,
        description="resolver the sandboxes' DNS proxy asks, as 'address' or 'address:port'; "
        "default: the first nameserver in /etc/resolv.conf",
    )

    templates: bool = Field(
        default=True,
        description="boot each (image, vCPUs, memory, boot files) once and restore later creates "
        "from that template; false: every create boots cold",
    )
    template_pool_size: int = Field(
        default=1,
        ge=0,
        le=16,
        description="QEMU processes kept started and waiting per template; 0: no warm pool",
    )
    restore_pool_size: int = Field(
        default=1,
        ge=0,
        le=16,
        description="QEMU processes kept started per VM shape, waiting for a resume, fork or "
        "restore from a snapshot to load its state (vm/incoming.py); 0: each restore starts one",
    )
    template_budget_bytes: int = Field(
        default=4 << 30,
        ge=0,
        description="tmpfs bytes all templates' RAM files may hold; least recently used "
        "templates are evicted beyond it (a template costs its whole memory size)",
    )
    template_dir: Path = Field(
        default=Path("/dev/shm/isorun"),
        description="tmpfs folder holding each hostd's template RAM files in a folder of its "
        "own (templates_prefix)",
    )
    audit_key_file: Path | None = Field(
        default=None,
        description="the audit chain's HMAC key (32 bytes, mode 0600, made on first start); "
        "default: <state_dir>/audit/key. Keep it off any disk a guest or tenant can read",
    )

    @property
    def audit_dir(self) -> Path:
        """The audit chain and its head (audit/chain.py)."""
        return self.state_dir / "audit"

    @property
    def templates_prefix(self) -> str:
        """How the template folders of hostds on this state and run folder begin: each runtime's
        is ``<template_dir>/<templates_prefix>-<pid>-<random>`` (templates.py), so that two
        hostds, or two runtimes in one process, never share one."""
        digest = hashlib.sha256(f"{self.state_dir.resolve()}\0{self.run_dir.resolve()}".encode())
        return digest.hexdigest()[:16]

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def boot_dir(self) -> Path:
        return self.state_dir / "boot"
