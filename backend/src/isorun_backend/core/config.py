"""The backend's settings: the one place that reads the environment (prefix ``ISORUN_``).

The embedded hostd keeps its own settings class (same prefix, so ``ISORUN_ACCEL`` or
``ISORUN_KERNEL_PATH`` still reach it); only its state and run folders are decided here, so that
one ``ISORUN_DATA_DIR`` holds everything the backend writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from isorun_hostd.config import Settings as HostdSettings
from isorun_hostd.images import ImageReferenceError, refuse_floating
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_IMAGE_ALIASES = {
    "python": "python:3.12-slim-bookworm",
    "node": "node:22-bookworm-slim",
    "ubuntu": "ubuntu:24.04",
}


class NodeConfig(BaseModel):
    """A hostd serving the node API (``isorun-hostd serve``)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(description="http://host:port of the node API")
    token: SecretStr = Field(description="the node's ISORUN_NODE_TOKEN")


class BackendSettings(BaseSettings):
    """Backend configuration.

    Example: ``ISORUN_DATA_DIR=/srv/isorun ISORUN_ENVIRONMENT=prod uvicorn ...``.
    """

    model_config = SettingsConfigDict(env_prefix="ISORUN_", extra="ignore")

    environment: Literal["dev", "prod"] = "dev"
    data_dir: Path = Field(
        default=Path("/var/lib/isorun"),
        description="the SQLite database (by default) and the embedded hostd's state",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default sqlite+aiosqlite:///<data_dir>/isorun.db",
    )
    hostd_state_dir: Path | None = Field(
        default=None, description="image cache and boot files; default <data_dir>/hostd"
    )
    hostd_run_dir: Path = Field(
        default=Path("/run/isorun"),
        description="one folder per running VM; short, because it holds unix socket paths",
    )
    image_aliases: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_IMAGE_ALIASES),
        description='short image names, JSON {"python": "python:3.12-slim-bookworm", ...}',
    )
    reaper_interval_s: float = Field(
        default=5.0, gt=0, description="how often expired sandboxes are looked for"
    )
    nodes: list[NodeConfig] = Field(
        default_factory=list,
        description='remote hostd nodes, JSON [{"name", "url", "token"}]; empty: embedded hostd',
    )
    # Per-tenant quotas; a tenant row's max_* column overrides each (services.quotas).
    quota_sandboxes: int = Field(default=20, ge=0, description="concurrent sandboxes per tenant")
    quota_vcpus: int = Field(default=32, ge=0, description="vCPUs of a tenant's sandboxes")
    quota_memory_mib: int = Field(
        default=64 * 1024, ge=0, description="memory of a tenant's sandboxes, MiB"
    )
    # Together $0.04/h for the smallest round sandbox (1 vCPU, 1 GiB), split evenly so that
    # neither resource is free to hoard (services.usage).
    price_vcpu_hour_usd: float = Field(default=0.02, ge=0, description="USD per vCPU-hour")
    price_gib_hour_usd: float = Field(default=0.02, ge=0, description="USD per GiB-hour of memory")

    # Public URLs (edge/): https://{port}-{sandbox}.{url_domain}[:url_public_port]/...
    url_listen: str | None = Field(
        default=None,
        description="host:port the URL edge serves on: TLS over TCP (HTTP/1.1, HTTP/2) and "
        "QUIC over UDP (HTTP/3); unset: this backend gives no public URLs",
    )
    url_domain: str = Field(
        # A wildcard certificate needs a name of two labels: *.localhost would match nothing.
        default="isorun.localhost",
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$",
        description="URLs are {port}-{sandbox}.{url_domain}; *.localhost needs no DNS, any "
        "other domain a wildcard record to the edge",
    )
    url_public_port: int | None = Field(
        default=None, ge=1, le=65535, description="the port in URLs; default: url_listen's"
    )
    url_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) for *.{url_domain}; default: a self-signed one "
        "made in <data_dir>/edge",
    )
    url_key_file: Path | None = Field(default=None, description="its PEM private key")
    url_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key that signs URL tokens (at least 32 bytes); default: one made "
        "once in <data_dir>/edge/url-secret. Changing it voids every URL given",
    )
    url_max_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="the longest a URL may stay valid"
    )

    @field_validator("url_listen")
    @classmethod
    def _listen_is_host_port(cls, listen: str | None) -> str | None:
        if listen is None:
            return None
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{listen!r}: give host:port, e.g. 127.0.0.1:8443")
        return listen

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> BackendSettings:
        if (self.url_cert_file is None) != (self.url_key_file is None):
            raise ValueError("set both ISORUN_URL_CERT_FILE and ISORUN_URL_KEY_FILE, or neither")
        if self.url_secret is not None and len(self.url_secret.get_secret_value()) < 32:
            raise ValueError("ISORUN_URL_SECRET needs at least 32 characters")
        return self

    @property
    def url_port(self) -> int | None:
        """The port in URLs: url_public_port, else url_listen's; None without an edge."""
        if self.url_listen is None:
            return None
        return self.url_public_port or int(self.url_listen.rpartition(":")[2])

    @field_validator("image_aliases")
    @classmethod
    def _aliases_are_pinned(cls, aliases: dict[str, str]) -> dict[str, str]:
        # A floating alias would be refused at every create; say so once, at start.
        for name, reference in aliases.items():
            if not name or any(c in name for c in ":/@"):
                raise ValueError(f"alias {name!r}: a short name has no ':', '/' or '@'")
            try:
                refuse_floating(reference)
            except ImageReferenceError as exc:
                raise ValueError(f"alias {name!r}: {exc}") from exc
        return aliases

    @field_validator("nodes")
    @classmethod
    def _node_names_are_unique(cls, nodes: list[NodeConfig]) -> list[NodeConfig]:
        # Rows name their node; two nodes of one name would make that ambiguous.
        names = [node.name for node in nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        if "embedded" in names:
            raise ValueError("the node name 'embedded' is the in-process hostd's")
        return nodes

    @model_validator(mode="after")
    def _prod_is_explicit(self) -> BackendSettings:
        # Outside dev nothing may silently fall back to a default location: a prod database
        # that quietly lands in the default data folder is lost data waiting to happen.
        if self.environment != "dev" and self.database_url is None:
            raise ValueError("ISORUN_DATABASE_URL must be set outside dev")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'isorun.db'}"

    def hostd(self) -> HostdSettings:
        """The embedded hostd's settings: its own environment, our folders."""
        return HostdSettings(
            state_dir=self.hostd_state_dir or self.data_dir / "hostd",
            run_dir=self.hostd_run_dir,
        )
