"""Compatibility module: the py-choria-external API, served by agent_host."""

from agent_host.exceptions import ImproperlyConfigured, InvalidRPCData
from agent_host.protocol import ProtocolMessage, Reply, validate

__all__ = ["ProtocolMessage", "Reply", "validate", "ImproperlyConfigured", "InvalidRPCData"]
