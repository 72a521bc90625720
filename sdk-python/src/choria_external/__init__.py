"""Compatibility module: the py-choria-external API, served by agent_host."""

from choria_external.dispatcher import dispatch
from choria_external.version import __version__

__all__ = ["__version__", "dispatch"]
