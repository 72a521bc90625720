"""Compatibility module: the py-choria-external API, served by agent_host."""

from agent_host.config import Config

__all__ = ["Config"]
