"""Compatibility module: the py-mco-agent API, served by agent_host."""

from mco_agent.agent import Agent, action, register_actions
from mco_agent.dispatcher import dispatch
from mco_agent.version import __version__

__all__ = ["__version__", "Agent", "action", "dispatch", "register_actions"]
