"""Exceptions an agent raises to fail a request, with their Choria status codes.

One hierarchy serves both compatibility packages: ``mco_agent.exceptions``
and ``choria_external.exceptions`` name these same classes, so an
``except AgentException`` or ``except ChoriaExternalException`` written for
either py-mco-agent release catches what the other raises.
"""

from __future__ import annotations

# Choria's mcorpc status codes.
OK = 0
ABORTED = 1
UNKNOWN_ACTION = 2
MISSING_DATA = 3
INVALID_DATA = 4
UNKNOWN_ERROR = 5


class ChoriaExternalException(Exception):
    """Base of every SDK exception: a status code and a description.

    ``str(e)`` is ``"<description>: <args joined by spaces>"``.
    """

    description: str = "Unknown error"
    statuscode: int = UNKNOWN_ERROR

    def __str__(self) -> str:
        return "%s: %s" % (self.description, " ".join(str(a) for a in self.args))


# py-mco-agent's name for the same base class.
AgentException = ChoriaExternalException


class RPCAborted(ChoriaExternalException):
    description = "RPC Aborted"
    statuscode = ABORTED


class UnknownRPCAction(ChoriaExternalException):
    description = "Unknown RPC Action"
    statuscode = UNKNOWN_ACTION


class MissingRPCData(ChoriaExternalException):
    description = "Missing Data"
    statuscode = MISSING_DATA


class InvalidRPCData(ChoriaExternalException):
    description = "Invalid Data"
    statuscode = INVALID_DATA


class UnknownRPCError(ChoriaExternalException):
    description = "Unknown error"
    statuscode = UNKNOWN_ERROR


class ImproperlyConfigured(ChoriaExternalException):
    # The description and code py-mco-agent gives it.
    description = "RPC Aborted"
    statuscode = UNKNOWN_ERROR


class InactiveAgent(ChoriaExternalException):
    description = "Agent is not activated"
    statuscode = UNKNOWN_ERROR


__all__ = [
    "OK", "ABORTED", "UNKNOWN_ACTION", "MISSING_DATA", "INVALID_DATA", "UNKNOWN_ERROR",
    "ChoriaExternalException", "AgentException", "RPCAborted", "UnknownRPCAction",
    "MissingRPCData", "InvalidRPCData", "UnknownRPCError", "ImproperlyConfigured",
    "InactiveAgent",
]
