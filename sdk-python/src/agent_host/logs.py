"""Where agents' log records go.

Records of the ``choria`` (and py-mco-agent 0.3's ``mcorpc``) loggers at
INFO and below go to stdout, which the host logs at info; WARNING and above
go to stderr, which the host logs at error. DEBUG records are kept only
when ``CHORIA_EXTERNAL_DEBUG`` is set to something other than ``0``.
"""

from __future__ import annotations

import logging
import os
import sys

_done = False


class _AtMostInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno <= logging.INFO


def setup_logger(enable_debug: object = None) -> logging.Logger:
    """Configures the ``choria`` and ``mcorpc`` loggers once; returns ``choria``."""
    global _done
    choria = logging.getLogger("choria")
    if _done:
        return choria
    _done = True
    if enable_debug is None:
        enable_debug = os.environ.get("CHORIA_EXTERNAL_DEBUG", "0")
    debug = enable_debug not in ("0", "", False, None)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_AtMostInfo())
    out.setLevel(logging.DEBUG if debug else logging.INFO)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for name in ("choria", "mcorpc"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(out)
        logger.addHandler(err)
        logger.propagate = False
    return choria


__all__ = ["setup_logger"]
