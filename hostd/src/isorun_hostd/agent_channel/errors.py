"""Errors of the agent channel.

```
ChannelError
├── ChannelClosed        the connection to the agent is gone (VM stopped, socket closed)
├── ProtocolViolation    the agent sent something the protocol does not allow
├── InputRefused         the stream ended while the host was still sending input to it
└── AgentError           the agent answered an operation with an error (code, message)
```
"""

from __future__ import annotations


class ChannelError(Exception):
    """Agent channel error."""


class ChannelClosed(ChannelError):
    """The agent channel is closed: {reason}."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the agent channel is closed: {reason}")
        self.reason = reason


class ProtocolViolation(ChannelError):
    """The guest agent broke the protocol: {detail}."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the guest agent broke the protocol: {detail}")
        self.detail = detail


class InputRefused(ChannelError):
    """{op}: the stream ended before all input was sent (the process exited, or an error)."""

    def __init__(self, op: str) -> None:
        super().__init__(f"{op}: the stream ended before all input was sent")
        self.op = op


class AgentError(ChannelError):
    """{op} failed in the guest: {code}: {message}."""

    def __init__(self, op: str, code: str, message: str) -> None:
        super().__init__(f"{op} failed in the guest: {code}: {message}")
        self.op = op
        self.code = code
        self.message = message
