"""Health: is this backend up, and which accelerator do its VMs get."""

from __future__ import annotations

from importlib.metadata import version

from isorun_hostd.sandboxes import Runtime

from isorun_backend.models import Health

VERSION = version("isorun-backend")


class HealthService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def check(self) -> Health:
        return Health(status="ok", version=VERSION, accelerator=self._runtime.caps.accel)
