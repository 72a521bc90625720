"""``python -m agent_host run AGENTFILE ACTION [key=value ...]``: see ``agent_host.cli``."""

import sys

from agent_host.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m agent_host"))
