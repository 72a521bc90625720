"""``dispatch``: run an agent class for the request the host gave this process."""

from __future__ import annotations

import os
import sys

from agent_host.exceptions import ChoriaExternalException, InvalidRPCData
from agent_host.protocol import ActionReply, ActivationReply, ProtocolMessage, RPC_REQUEST

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Type

    from agent_host.protocol import Reply


def setup_logger(enable_debug: object = None) -> Any:
    """Configures where the ``choria`` loggers write (see ``agent_host.logs``)."""
    from agent_host.logs import setup_logger as setup

    return setup(enable_debug)


def read_request(protocol: Type[ProtocolMessage], request_file: Optional[str]) -> ProtocolMessage:
    """Reads and checks a request from ``request_file``, or from stdin without one."""
    try:
        if request_file:
            with open(request_file, "r", encoding="utf-8") as fp:
                text = fp.read()
        else:
            text = sys.stdin.read()
    except UnicodeDecodeError as e:
        raise InvalidRPCData("the request is not UTF-8: %s" % e) from None
    return protocol.from_json(text)


def write_reply(reply_file: Optional[str], reply: Reply) -> None:
    """Writes the reply document to ``reply_file``, or to stdout without one.

    A reply that holds NaN or Infinity, which ``json.dumps`` writes but no
    JSON reader (Choria's included) accepts, is replaced by a failure of
    the request, code 1.
    """
    text = _sendable(reply, reply.to_json())
    if reply_file:
        with open(reply_file, "w", encoding="utf-8") as fp:
            fp.write(text)
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _sendable(reply: Reply, text: str) -> str:
    if not ("NaN" in text or "Infinity" in text) or not isinstance(reply, ActionReply) \
            or type(reply).to_json is not ActionReply.to_json:
        return text
    import json

    try:
        json.dumps(reply.to_dict(), allow_nan=False)
        return text  # in a string, not a number
    except ValueError:
        pass
    why = "it holds NaN or Infinity, which JSON cannot carry"
    sys.stderr.write("the reply cannot be sent: %s: the request fails instead\n" % why)
    return ActionReply(1, "RPC Aborted: the reply cannot be sent: %s" % why).to_json()


def _arg(argv: List[str], i: int) -> Optional[str]:
    return argv[i] if len(argv) > i and argv[i] else None


def dispatch(cls: Any, argv: Optional[List[str]] = None, concurrency: Optional[int] = None) -> None:
    """Answers the request this process was started for.

    Started by agent-host as a pool worker (``AGENT_HOST_WORKER`` is
    ``io.agent-host.worker``), it serves requests over the worker protocol
    instead and does not return: see ``agent_host.worker``. ``concurrency``
    (default: the class's ``concurrency`` attribute, else 1) is how many
    requests the worker runs at once.

    The protocol is ``$CHORIA_EXTERNAL_PROTOCOL`` (argv's third argument
    when the variable is unset: Choria always passes the RPC protocol
    there, even for activation checks, so the variable wins). The request
    is read from ``$CHORIA_EXTERNAL_REQUEST``, else argv's first argument,
    else stdin; the reply is written to ``$CHORIA_EXTERNAL_REPLY``, else
    argv's second argument, else stdout.

    A request that cannot be read or is not a valid document of its
    protocol is reported on stderr and the process exits 1 without a reply
    (the host then fails the request). Once the reply is written
    ``dispatch`` returns, whatever the reply's status code, so the process
    exits 0: the host reads the reply only after a zero exit.
    """
    if argv is None:
        argv = sys.argv
    env = os.environ
    if env.get("AGENT_HOST_WORKER") == "io.agent-host.worker":
        from agent_host.worker import serve

        # A worker lives long: its loggers are routed from the start, for
        # whatever the agent logs, however it got its logger.
        setup_logger()
        serve(cls, concurrency)
    if "logging" in sys.modules:
        # The agent uses logging already: route its records now.
        setup_logger()

    protocol_name = env.get("CHORIA_EXTERNAL_PROTOCOL") or _arg(argv, 3)
    if not protocol_name:
        sys.stderr.write("Unknown protocol\n")
        sys.exit(1)
    if env.get("CHORIA_EXTERNAL_REQUEST"):
        request_file: Optional[str] = env["CHORIA_EXTERNAL_REQUEST"]
        reply_file = env.get("CHORIA_EXTERNAL_REPLY") or None
    else:
        request_file = _arg(argv, 1)
        reply_file = env.get("CHORIA_EXTERNAL_REPLY") or _arg(argv, 2)

    try:
        protocol = ProtocolMessage.get_protocol(protocol_name)
        request = read_request(protocol, request_file)
    except (ChoriaExternalException, OSError) as e:
        sys.stderr.write("%s\n" % e)
        sys.exit(1)

    reply = protocol.create_reply()
    cls.dispatch(request, reply)
    if isinstance(reply, ActivationReply) and "1" in [v.strip() for v in env.get("AGENT_HOST_WORKER_PROTOCOLS", "").split(",")]:
        # agent-host asks whether the agent runs as a pool worker; Choria never does.
        reply.worker_versions = [1]
    write_reply(reply_file, reply)


__all__ = ["dispatch", "setup_logger", "read_request", "write_reply", "RPC_REQUEST"]
