"""hostd's settings: the one place that reads the environment (prefix ``ISORUN_``)."""

from __future__ import annotations

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

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def boot_dir(self) -> Path:
        return self.state_dir / "boot"
