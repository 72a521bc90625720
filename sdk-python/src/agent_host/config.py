"""The agent's ``key = value`` configuration file."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List


class Config:
    """Settings read from the agent's configuration file.

    Where the file is: Choria and agent-host set ``CHORIA_EXTERNAL_CONFIG`` to
    ``<config dir>/plugin.d/<agent>`` (a file name without ``.cfg``). The
    first of these that is a regular file is read:

    1. ``$CHORIA_EXTERNAL_CONFIG`` itself;
    2. ``$CHORIA_EXTERNAL_CONFIG.cfg`` (the ``plugin.d/<agent>.cfg`` that
       Puppet's ``mcollective::module_plugin`` writes);
    3. ``$CHORIA_EXTERNAL_CONFIG/<agent>.cfg`` (where py-mco-agent 0.3 and
       0.4 looked, treating the variable as a directory).

    Without the variable, ``CONFIG_DIR/<agent>`` then ``CONFIG_DIR/<agent>.cfg``.
    A missing file is an empty configuration, and ``read_config`` leaves
    ``config_file`` at the ``.cfg`` name.
    """

    CONFIG_DIR = "/etc/puppetlabs/mcollective/plugin.d/"

    def __init__(self, plugin_name: str) -> None:
        self.plugin_name = plugin_name
        self.config: Dict[str, str] = {}
        candidates = self.candidate_files()
        self.config_file: str = candidates[0]
        for path in candidates:
            if os.path.isfile(path):
                self.config_file = path
                break

    def candidate_files(self) -> List[str]:
        env = os.environ.get("CHORIA_EXTERNAL_CONFIG")
        name = self.plugin_name
        if env:
            paths = [env]
            if not env.endswith(".cfg"):
                paths.append(env + ".cfg")
            paths.append(os.path.join(env, name + ".cfg"))
            return paths
        base = os.path.join(self.CONFIG_DIR, name)
        return [base, base + ".cfg"]

    def config_exists(self) -> bool:
        return os.path.isfile(self.config_file)

    def read_config(self) -> None:
        """Reads the file, if there is one, replacing what was read before."""
        if not self.config_exists():
            # As py-choria-external 0.2 leaves it (0.1 and py-mco-agent end
            # theirs the same way): the name Puppet writes.
            self.config_file = next(p for p in self.candidate_files() if p.endswith(".cfg"))
            return
        with open(self.config_file, "r", encoding="utf-8", errors="replace") as fp:
            self.config = self.parse_config(fp.readlines())

    @staticmethod
    def parse_config(contents: Iterable[str]) -> Dict[str, str]:
        """Parses ``key = value`` lines.

        Leading blanks and the line end are dropped; lines starting ``#`` and
        lines without ``=`` are skipped; the key is stripped, the value keeps
        its trailing blanks. A later key wins.
        """
        config: Dict[str, str] = {}
        for line in contents:
            line = line.lstrip().rstrip("\r\n")
            if line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            config[key.strip()] = value.lstrip()
        return config

    def __contains__(self, key: object) -> bool:
        return key in self.config

    def __getitem__(self, key: str) -> str:
        return self.config[key]

    def get(self, key: str, default_value: Any = None) -> Any:
        return self.config.get(key, default_value)

    def __repr__(self) -> str:
        return "%s(%r, file=%r)" % (type(self).__name__, self.plugin_name, self.config_file)


__all__ = ["Config"]
