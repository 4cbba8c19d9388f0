"""The Python constants must agree with spec/agent/wire.json (the Go agent has the twin test)."""

import json
from pathlib import Path

from isorun_hostd.agent_channel import protocol

WIRE = json.loads((Path(__file__).parents[3] / "spec" / "agent" / "wire.json").read_text())


def test_scalars_match_the_spec() -> None:
    assert WIRE["protocol"] == protocol.PROTOCOL_VERSION
    assert WIRE["magic"].encode() == protocol.MAGIC
    assert WIRE["header_bytes"] == protocol.HEADER_BYTES
    assert WIRE["max_payload_bytes"] == protocol.MAX_PAYLOAD_BYTES
    assert WIRE["data_chunk_bytes"] == protocol.DATA_CHUNK_BYTES
    assert WIRE["initial_window_bytes"] == protocol.INITIAL_WINDOW_BYTES
    assert WIRE["max_streams"] == protocol.MAX_STREAMS
    assert WIRE["exit_ttl_ms"] == protocol.EXIT_TTL_MS
    assert WIRE["detached_buffer_bytes"] == protocol.DETACHED_BUFFER_BYTES
    assert WIRE["shell_scrollback_bytes"] == protocol.SHELL_SCROLLBACK_BYTES
    assert WIRE["max_shell_scrollback_bytes"] == protocol.MAX_SHELL_SCROLLBACK_BYTES
    assert WIRE["max_shells"] == protocol.MAX_SHELLS
    assert WIRE["port_name"] == protocol.PORT_NAME


def test_enumerations_match_the_spec() -> None:
    assert {t.name.lower(): t.value for t in protocol.FrameType} == WIRE["frame_types"]
    assert {c.name.lower(): c.value for c in protocol.Channel} == WIRE["channels"]
    assert list(protocol.ERROR_CODES) == WIRE["error_codes"]
