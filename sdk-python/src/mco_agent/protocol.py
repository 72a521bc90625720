"""Compatibility module: the py-mco-agent API, served by agent_host."""

from agent_host.protocol import (
    ActionReply,
    ActivationReply,
    ExternalActivationRequest,
    ExternalRPCRequest,
    ProtocolMessage,
    Reply,
)

__all__ = ["ActionReply", "ActivationReply", "ExternalActivationRequest", "ExternalRPCRequest", "ProtocolMessage", "Reply"]
