"""The host end of the guest agent protocol (spec/agent/protocol.md)."""

from isorun_hostd.agent_channel.channel import AgentChannel, Output, Process
from isorun_hostd.agent_channel.errors import (
    AgentError,
    ChannelClosed,
    ChannelError,
    InputRefused,
    ProtocolViolation,
)
from isorun_hostd.agent_channel.protocol import (
    Channel,
    ExecEnd,
    ExecRequest,
    FileStat,
    IdentityReply,
    IdentityRequest,
    ShellEnd,
    ShellInfo,
    ShellRequest,
    TunnelEnd,
)
from isorun_hostd.agent_channel.shells import ShellAttachment, ShellEvent
from isorun_hostd.agent_channel.tunnel import Tunnel

__all__ = [
    "AgentChannel",
    "AgentError",
    "Channel",
    "ChannelClosed",
    "ChannelError",
    "ExecEnd",
    "ExecRequest",
    "FileStat",
    "IdentityReply",
    "IdentityRequest",
    "InputRefused",
    "Output",
    "Process",
    "ProtocolViolation",
    "ShellAttachment",
    "ShellEnd",
    "ShellEvent",
    "ShellInfo",
    "ShellRequest",
    "Tunnel",
    "TunnelEnd",
]
