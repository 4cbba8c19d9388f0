"""A VM's lifecycle states and the transitions between them.

```
  CREATED ──► BOOTING ──► RUNNING ──► STOPPING ──► STOPPED
     │           ▲ │                     ▲
     │           │ └───────► FAILED ─────┘  (a failed boot or launch is torn down like a stop)
     ▼           │             ▲
  LAUNCHING ──► INCOMING       │            (QEMU started ahead of a restore: -incoming defer)
     └─────────────────────────┘
```
"""

from __future__ import annotations

from enum import Enum

from isorun_hostd.vm.errors import StateError


class VMState(Enum):
    CREATED = "created"
    LAUNCHING = "launching"
    INCOMING = "incoming"
    BOOTING = "booting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


TRANSITIONS: dict[VMState, frozenset[VMState]] = {
    VMState.CREATED: frozenset({VMState.BOOTING, VMState.LAUNCHING, VMState.STOPPING}),
    VMState.LAUNCHING: frozenset({VMState.INCOMING, VMState.FAILED, VMState.STOPPING}),
    VMState.INCOMING: frozenset({VMState.BOOTING, VMState.STOPPING}),
    VMState.BOOTING: frozenset({VMState.RUNNING, VMState.FAILED, VMState.STOPPING}),
    VMState.RUNNING: frozenset({VMState.STOPPING}),
    VMState.FAILED: frozenset({VMState.STOPPING}),
    VMState.STOPPING: frozenset({VMState.STOPPED}),
    VMState.STOPPED: frozenset(),
}


def _check_table() -> None:
    missing = set(VMState) - TRANSITIONS.keys()
    if missing:
        raise AssertionError(f"states without a transition entry: {missing}")
    for source, targets in TRANSITIONS.items():
        if source in targets:
            raise AssertionError(f"{source} transitions to itself")


_check_table()


class StateMachine:
    """Holds one VM's state and refuses transitions the table does not allow."""

    def __init__(self, vm_id: str) -> None:
        self.vm_id = vm_id
        self.state = VMState.CREATED
        self.history = [VMState.CREATED]

    def move(self, target: VMState) -> None:
        if target not in TRANSITIONS[self.state]:
            raise StateError(
                self.vm_id, self.state.value, f"a state that can become {target.value}"
            )
        self.state = target
        self.history.append(target)

    def require(self, *states: VMState) -> None:
        if self.state not in states:
            raise StateError(self.vm_id, self.state.value, " or ".join(s.value for s in states))
