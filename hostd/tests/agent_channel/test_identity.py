"""The identity request model (protocol.md 5.1.1) and the fresh identity hostd builds."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from isorun_hostd.agent_channel import IdentityRequest
from isorun_hostd.vm.identity import ENTROPY_BYTES, fresh_identity
from pydantic import ValidationError

GOOD: dict[str, Any] = {
    "entropy": bytes(range(32)),
    "time_unix_ns": 1_750_000_000_000_000_000,
    "hostname": "sb-1",
    "machine_id": "0123456789abcdef0123456789abcdef",
}


def test_the_payload_is_the_wire_shape() -> None:
    assert IdentityRequest(**GOOD).payload() == {
        "op": "identity",
        "entropy": base64.b64encode(bytes(range(32))).decode(),
        "time_unix_ns": 1_750_000_000_000_000_000,
        "hostname": "sb-1",
        "machine_id": "0123456789abcdef0123456789abcdef",
    }


def test_without_a_machine_id_the_payload_leaves_it_out() -> None:
    request = IdentityRequest(**{**GOOD, "machine_id": None})
    assert "machine_id" not in request.payload()
    assert fresh_identity("sb-a", machine_id=False).machine_id is None
    assert fresh_identity("sb-a").machine_id is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("entropy", bytes(31)),
        ("entropy", bytes(513)),
        ("entropy", "c2hvcnQ="),
        ("time_unix_ns", 1_750_000_000),
        ("time_unix_ns", 1 << 63),
        ("time_unix_ns", 1.75e18),
        ("hostname", "Box"),
        ("hostname", "a.b"),
        ("hostname", "-a"),
        ("hostname", "a" * 64),
        ("machine_id", "0" * 32),
        ("machine_id", "0123456789ABCDEF0123456789ABCDEF"),
        ("machine_id", "0123456789abcdef"),
    ],
)
def test_malformed_fields_fail_before_sending(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        IdentityRequest(**{**GOOD, field: value})


def test_a_fresh_identity_is_random_and_now() -> None:
    before = time.time_ns()
    one, two = fresh_identity("sb-a"), fresh_identity("sb-a")
    assert before <= one.time_unix_ns <= two.time_unix_ns <= time.time_ns()
    assert len(one.entropy) == ENTROPY_BYTES
    assert one.entropy != two.entropy
    assert one.machine_id != two.machine_id
    assert one.hostname == "sb-a"


def test_a_fresh_identity_refuses_a_bad_hostname() -> None:
    with pytest.raises(ValidationError):
        fresh_identity("not_a_label")
