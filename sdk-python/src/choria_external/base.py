"""Compatibility module: the py-choria-external API, served by agent_host."""

from agent_host.agent import ChoriaExternal
from agent_host.config import Config
from agent_host.exceptions import ChoriaExternalException, RPCAborted

__all__ = ["ChoriaExternal", "Config", "ChoriaExternalException", "RPCAborted"]
