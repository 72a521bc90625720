"""Compatibility module: the py-choria-external API, served by agent_host."""

from agent_host.dispatcher import dispatch, read_request, setup_logger, write_reply
from agent_host.protocol import ProtocolMessage

__all__ = ["dispatch", "read_request", "setup_logger", "write_reply", "ProtocolMessage"]
