"""agent-host's Python SDK for Choria external agents.

Agents written for py-mco-agent 0.3/0.4 and py-choria-external 0.1/0.2 run
unchanged through the ``mco_agent`` and ``choria_external`` packages, which
are thin names for what is defined here.
"""

from agent_host.agent import Agent, ChoriaExternal, action, register_actions
from agent_host.config import Config
from agent_host.dispatcher import dispatch
from agent_host.exceptions import (
    AgentException,
    ChoriaExternalException,
    ImproperlyConfigured,
    InactiveAgent,
    InvalidRPCData,
    MissingRPCData,
    RPCAborted,
    UnknownRPCAction,
    UnknownRPCError,
)
from agent_host.protocol import (
    ActionReply,
    ActivationReply,
    ExternalActivationRequest,
    ExternalRPCRequest,
    ProtocolMessage,
    Reply,
)
from agent_host.version import __version__

__all__ = [
    "__version__", "Agent", "ChoriaExternal", "action", "register_actions", "dispatch", "Config",
    "AgentException", "ChoriaExternalException", "ImproperlyConfigured", "InactiveAgent",
    "InvalidRPCData", "MissingRPCData", "RPCAborted", "UnknownRPCAction", "UnknownRPCError",
    "ActionReply", "ActivationReply", "ExternalActivationRequest", "ExternalRPCRequest",
    "ProtocolMessage", "Reply",
]
