"""Compatibility module: the py-mco-agent API, served by agent_host."""

from agent_host.dispatcher import dispatch, read_request, setup_logger, write_reply
from mco_agent.agent import Agent
from mco_agent.exceptions import AgentException, ImproperlyConfigured, InactiveAgent, RPCAborted
from mco_agent.protocol import ExternalActivationRequest, ExternalRPCRequest, ProtocolMessage

__all__ = [
    "dispatch", "read_request", "setup_logger", "write_reply", "Agent", "AgentException",
    "ImproperlyConfigured", "InactiveAgent", "RPCAborted", "ExternalActivationRequest",
    "ExternalRPCRequest", "ProtocolMessage",
]
