"""Health: is this backend up, and which accelerator do its VMs get."""

from __future__ import annotations

from importlib.metadata import version
from typing import Literal

from isorun_backend.models import Health

VERSION = version("isorun-backend")


class HealthService:
    def __init__(self, accelerator: Literal["kvm", "tcg"]) -> None:
        self._accelerator = accelerator

    def check(self) -> Health:
        return Health(status="ok", version=VERSION, accelerator=self._accelerator)
