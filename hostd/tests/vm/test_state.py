import pytest
from isorun_hostd.vm.errors import StateError
from isorun_hostd.vm.state import TRANSITIONS, StateMachine, VMState


def test_every_state_reaches_stopped() -> None:
    for state in VMState:
        seen, frontier = {state}, [state]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert VMState.STOPPED in seen


def test_boot_then_destroy_sequence() -> None:
    machine = StateMachine("vm-1")
    for state in (VMState.BOOTING, VMState.RUNNING, VMState.STOPPING, VMState.STOPPED):
        machine.move(state)
    assert machine.history == [
        VMState.CREATED,
        VMState.BOOTING,
        VMState.RUNNING,
        VMState.STOPPING,
        VMState.STOPPED,
    ]


def test_refused_transition_names_states() -> None:
    machine = StateMachine("vm-1")
    with pytest.raises(StateError, match="VM vm-1 is created"):
        machine.move(VMState.RUNNING)
    with pytest.raises(StateError) as info:
        machine.require(VMState.RUNNING)
    assert (info.value.state, info.value.required) == ("created", "running")
