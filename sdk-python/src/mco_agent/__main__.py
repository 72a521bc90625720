"""``python -m mco_agent run AGENTFILE ACTION [key=value ...]``: agent_host's runner (``agent_host.cli``)."""

import sys

from agent_host.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m mco_agent"))
