"""Compatibility module: the py-choria-external API, served by agent_host."""

from agent_host.exceptions import ImproperlyConfigured, InvalidRPCData
from agent_host.protocol import ProtocolMessage, Reply, validate

# py-choria-external imported jsonschema's validate and ValidationError
# here; the SDK's validate raises InvalidRPCData, so that
# `except ValidationError` around it still catches what it raises.
ValidationError = InvalidRPCData

__all__ = ["ProtocolMessage", "Reply", "validate", "ValidationError", "ImproperlyConfigured", "InvalidRPCData"]
