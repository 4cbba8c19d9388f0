"""What a sandbox's network is asked to be: its egress policy and the secrets its proxy injects.

These are the request shapes shared by hostd's Runtime, the node API, the backend and the SDK.
The policy is data only; ``isorun_hostd.net.policy`` decides what it allows.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator

# Fixed inside every sandbox's namespace, so snapshots and forks need no re-addressing.
GUEST_ADDRESS = "10.0.0.2"
HOST_ADDRESS = "10.0.0.1"
GUEST_PREFIX = 24

SECRET_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]{0,63}$"
HEADER_PATTERN = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*\{value\}.*)$")


class EgressPolicy(BaseModel):
    """``profile`` gives the base rules; ``allow`` and ``deny`` hold CIDRs (``10.1.0.0/16``,
    ``203.0.113.7``) and domain names (``pypi.org``, ``*.githubusercontent.com``). An allow
    entry wins over a deny entry, so ``deny=["0.0.0.0/0"], allow=["pypi.org"]`` opens one name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = Field(default="locked-down", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


class SecretSpec(BaseModel):
    """One secret, bound to one upstream. The guest gets ``name`` set to a placeholder and
    ``base_url_env`` (when given) set to the proxy's route for ``upstream``; the proxy sends
    ``header`` with ``{value}`` filled in to ``upstream`` and to no other host.

    Example: ``SecretSpec(name="OPENAI_API_KEY", value="sk-...",
    upstream="https://api.openai.com/v1", base_url_env="OPENAI_BASE_URL")``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SECRET_NAME_PATTERN)
    value: SecretStr
    upstream: HttpUrl
    header: str = "Authorization: Bearer {value}"
    base_url_env: str | None = Field(default=None, pattern=SECRET_NAME_PATTERN)

    @field_validator("upstream")
    @classmethod
    def _https_only(cls, url: HttpUrl) -> HttpUrl:
        if url.scheme != "https":
            raise ValueError(f"secret upstream {url} must be https: the value travels over TLS")
        if url.query or url.fragment:
            raise ValueError(f"secret upstream {url} must be a base URL without query or fragment")
        return url

    @field_validator("header")
    @classmethod
    def _header_template(cls, header: str) -> str:
        if not HEADER_PATTERN.match(header) or "\r" in header or "\n" in header:
            raise ValueError(
                f"secret header {header!r} must look like 'Name: text with {{value}}', "
                "e.g. 'Authorization: Bearer {value}' or 'x-api-key: {value}'"
            )
        return header

    @property
    def header_name(self) -> str:
        match = HEADER_PATTERN.match(self.header)
        assert match is not None
        return match.group(1)

    def header_value(self) -> str:
        match = HEADER_PATTERN.match(self.header)
        assert match is not None
        return match.group(2).replace("{value}", self.value.get_secret_value())


class NetworkSpec(BaseModel):
    """A sandbox's whole network request. The default is no egress at all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: EgressPolicy = EgressPolicy()
    secrets: tuple[SecretSpec, ...] = ()

    @field_validator("secrets")
    @classmethod
    def _unique_names(cls, secrets: tuple[SecretSpec, ...]) -> tuple[SecretSpec, ...]:
        names = [s.name for s in secrets]
        if len(set(names)) != len(names):
            raise ValueError(f"secret names must be unique, got {names}")
        return secrets
