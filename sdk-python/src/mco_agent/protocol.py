"""Compatibility module: the py-mco-agent API, served by agent_host."""

from agent_host.exceptions import ImproperlyConfigured, InvalidRPCData
from agent_host.protocol import (
    ActionReply,
    ActivationReply,
    ExternalActivationRequest,
    ExternalRPCRequest,
    ProtocolMessage,
    Reply,
    validate,
)

# py-mco-agent imported jsonschema's validate and ValidationError here; the
# SDK's validate raises InvalidRPCData, so that `except ValidationError`
# around it still catches what it raises.
ValidationError = InvalidRPCData

__all__ = [
    "ActionReply", "ActivationReply", "ExternalActivationRequest", "ExternalRPCRequest", "ProtocolMessage", "Reply",
    "ImproperlyConfigured", "InvalidRPCData", "ValidationError", "validate",
]
