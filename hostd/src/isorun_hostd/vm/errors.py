"""Errors of the VM subsystem; the first line of each docstring is its message pattern.

```
VMError
├── BootFilesError      kernel, modules or agent missing or unusable
├── LaunchError         QEMU would not start, or died while booting
├── BootTimeout         the agent did not answer within the boot timeout
├── StateError          an operation was asked of a VM in the wrong state
└── SnapshotError       a VM's state could not be saved or restored
```
"""

from __future__ import annotations


class VMError(Exception):
    """VM error: {detail}."""


class BootFilesError(VMError):
    """Cannot prepare the guest boot files: {detail}."""


class LaunchError(VMError):
    """QEMU failed for VM {vm_id}: {detail}.

    ``qemu_log`` holds the end of what QEMU printed, when it printed anything.
    """

    qemu_log = ""


class BootTimeout(VMError):
    """VM {vm_id}: the guest agent did not answer within {seconds} s."""


class StateError(VMError):
    """VM {vm_id} is {state}; this needs {required}."""

    def __init__(self, vm_id: str, state: str, required: str) -> None:
        super().__init__(f"VM {vm_id} is {state}; this needs {required}")
        self.state = state
        self.required = required


class SnapshotError(VMError):
    """VM {vm_id}: {what} failed: {detail}."""
