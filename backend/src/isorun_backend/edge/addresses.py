"""Where a sandbox's port is published: ``{port}-{sandbox_id}.{domain}``, and back."""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKEN_PARAM = "isorun_token"


@dataclass(frozen=True, slots=True)
class PortAddress:
    port: int
    sandbox_id: str


class Addresses:
    """Host names under ``domain`` for the edge reached at ``public_port`` over https."""

    def __init__(self, domain: str, public_port: int) -> None:
        self.domain = domain.lower().rstrip(".")
        self.public_port = public_port
        self._host = re.compile(
            rf"^(?P<port>[1-9][0-9]{{0,4}})-(?P<sandbox>sb-[0-9a-f]{{12}})\.{re.escape(self.domain)}"
            rf"(?::[0-9]+)?$"
        )

    def host(self, address: PortAddress) -> str:
        return f"{address.port}-{address.sandbox_id}.{self.domain}"

    def origin(self, address: PortAddress) -> str:
        port = "" if self.public_port == 443 else f":{self.public_port}"
        return f"https://{self.host(address)}{port}"

    def parse(self, host: str) -> PortAddress | None:
        """The port and sandbox a Host header names; None for any other host."""
        match = self._host.match(host.lower())
        if match is None or int(match["port"]) > 65535:
            return None
        return PortAddress(int(match["port"]), match["sandbox"])
