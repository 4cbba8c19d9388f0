"""QEMU microVMs: boot files, host capabilities, command line, process, QMP and lifecycle."""

from isorun_hostd.vm.bootfiles import BootFiles
from isorun_hostd.vm.capabilities import HostCapabilities
from isorun_hostd.vm.cmdline import VMSpec
from isorun_hostd.vm.errors import BootFilesError, BootTimeout, LaunchError, StateError, VMError
from isorun_hostd.vm.machine import MicroVM
from isorun_hostd.vm.state import VMState

__all__ = [
    "BootFiles",
    "BootFilesError",
    "BootTimeout",
    "HostCapabilities",
    "LaunchError",
    "MicroVM",
    "StateError",
    "VMError",
    "VMSpec",
    "VMState",
]
