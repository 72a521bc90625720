"""Compatibility module: the py-mco-agent API, served by agent_host."""

from agent_host.config import Config


class AgentConfig(Config):
    """py-mco-agent 0.3's name for ``Config``, made with 0.3's argument name."""

    def __init__(self, agent_name: str) -> None:
        Config.__init__(self, agent_name)

    @property
    def agent_name(self) -> str:
        return self.plugin_name

    @agent_name.setter
    def agent_name(self, value: str) -> None:
        self.plugin_name = value


__all__ = ["AgentConfig"]
