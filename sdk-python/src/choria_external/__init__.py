"""Compatibility module: the py-choria-external API, served by agent_host."""

from __future__ import annotations

from choria_external.dispatcher import dispatch
from choria_external.version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List

# py-choria-external's own imports leave .exceptions and .protocol
# attributes of the package; here they are imported on first use, so that
# an agent that does not use them does not pay for them at start-up.
_LAZY = ("exceptions", "protocol")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return importlib.import_module("choria_external." + name)
    raise AttributeError("module 'choria_external' has no attribute %r" % name)


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", "dispatch"]
