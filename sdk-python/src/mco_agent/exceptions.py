"""Compatibility module: the py-mco-agent API, served by agent_host."""

from agent_host.exceptions import (
    AgentException,
    ImproperlyConfigured,
    InactiveAgent,
    InvalidRPCData,
    RPCAborted,
    UnknownRPCAction,
)

__all__ = ["AgentException", "ImproperlyConfigured", "InactiveAgent", "InvalidRPCData", "RPCAborted", "UnknownRPCAction"]
