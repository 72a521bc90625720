"""Compatibility module: the py-mco-agent API, served by agent_host."""

from agent_host.config import Config


class AgentConfig(Config):
    """py-mco-agent 0.3's name for ``Config``."""

    @property
    def agent_name(self) -> str:
        return self.plugin_name


__all__ = ["AgentConfig"]
