"""Compatibility module: the py-mco-agent API, served by agent_host."""

from agent_host.agent import Agent, ChoriaExternal, action, register_actions
from agent_host.config import Config
from agent_host.exceptions import (
    AgentException,
    ChoriaExternalException,
    InactiveAgent,
    RPCAborted,
    UnknownRPCAction,
)
from agent_host.protocol import ExternalActivationRequest, ExternalRPCRequest
from mco_agent.config import AgentConfig

__all__ = [
    "Agent", "ChoriaExternal", "action", "register_actions", "Config", "AgentConfig",
    "AgentException", "ChoriaExternalException", "InactiveAgent", "RPCAborted", "UnknownRPCAction",
    "ExternalActivationRequest", "ExternalRPCRequest",
]
