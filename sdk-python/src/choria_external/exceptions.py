"""Compatibility module: the py-choria-external API, served by agent_host."""

from agent_host.exceptions import (
    ChoriaExternalException,
    ImproperlyConfigured,
    InvalidRPCData,
    RPCAborted,
    UnknownRPCAction,
)

__all__ = ["ChoriaExternalException", "ImproperlyConfigured", "InvalidRPCData", "RPCAborted", "UnknownRPCAction"]
