"""Agents: a class per agent, a method per action."""

from __future__ import annotations

import os
import sys

from agent_host.config import Config
from agent_host.exceptions import ChoriaExternalException, InactiveAgent, RPCAborted, UnknownRPCAction
from agent_host.protocol import ExternalActivationRequest, ExternalRPCRequest, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any, Callable, Dict, Optional, Type, TypeVar

    import threading

    from agent_host.protocol import ProtocolMessage, Reply

    F = TypeVar("F", bound=Callable[..., Any])
    C = TypeVar("C", bound=type)


class ChoriaExternal:
    """Base of anything the external protocol runs: the request, its reply,
    the plugin's configuration and a logger named ``choria.<name>``.

    The plugin's name is its class name in lower case.
    """

    def __init__(self, request: ProtocolMessage, reply: Reply) -> None:
        self.plugin_name: str = type(self).__name__.lower()
        self.request: Any = request
        self.reply: Any = reply
        self.config: Optional[Config] = None
        self._facts: Optional[Dict[str, Any]] = None
        self._job: Any = None

    # The request's deadline and cancellation. In pool mode the worker sets
    # them (``_job``); in exec mode there is no deadline and no cancel (past
    # its timeout the process is killed).

    @property
    def deadline(self) -> Optional[float]:
        """When the host stops waiting for the reply, in seconds since the
        epoch (``time.time()``'s clock); ``None`` in exec mode."""
        job = self.__dict__.get("_job")
        return job.deadline if job is not None else None

    def time_left(self) -> Optional[float]:
        """Seconds until ``deadline`` (never below 0); ``None`` without one."""
        d = self.deadline
        if d is None:
            return None
        import time

        return max(0.0, d - time.time())

    @property
    def cancelled(self) -> threading.Event:
        """A ``threading.Event`` set when the request is cancelled: the host
        sent a cancel, its deadline (less a margin) passed, or the worker
        is shutting down. Check ``is_set()`` or ``wait(timeout)`` in long
        actions; the reply is still sent when the action returns."""
        job = self.__dict__.get("_job")
        if job is None:
            import threading

            job = self._job = _ExecJob(threading.Event())
        return job.cancelled  # type: ignore[no-any-return]

    @property
    def cancel_reason(self) -> Optional[str]:
        """Why ``cancelled`` is set, or ``None``."""
        job = self.__dict__.get("_job")
        return job.cancel_reason if job is not None else None

    @property
    def agent_name(self) -> str:
        """py-mco-agent 0.3's name for ``plugin_name``."""
        return self.plugin_name

    @agent_name.setter
    def agent_name(self, value: str) -> None:
        self.plugin_name = value

    @property
    def logger(self) -> logging.Logger:
        """``logging.getLogger("choria.<name>")``; ``logging`` is imported on first use."""
        logger = self.__dict__.get("_logger")
        if logger is None:
            from agent_host.logs import setup_logger

            logger = setup_logger().getChild(self.plugin_name)
            self.__dict__["_logger"] = logger
        return logger

    @logger.setter
    def logger(self, value: logging.Logger) -> None:
        self.__dict__["_logger"] = value

    def load_facts(self) -> Dict[str, Any]:
        """The node's facts, read from ``CHORIA_EXTERNAL_FACTS`` on first use.

        ``{}`` when there are none: the file is empty for activation checks.
        """
        if getattr(self, "_facts", None) is None:
            facts: Any = {}
            path = os.environ.get("CHORIA_EXTERNAL_FACTS")
            if path:
                try:
                    with open(path, "r", encoding="utf-8") as fp:
                        text = fp.read()
                    if text.strip():
                        facts = loads(text)
                except (OSError, ValueError):
                    facts = {}
            self._facts = facts if isinstance(facts, dict) else {}
        return self._facts  # type: ignore[return-value]

    def load_config(self) -> None:
        self.config = Config(self.plugin_name)
        self.config.read_config()

    def execute(self) -> None:
        """Does the work; subclasses override it."""

    @classmethod
    def dispatch(cls, request: ProtocolMessage, reply: Reply) -> None:
        """Runs ``execute`` for one request, turning failures into a failed reply."""
        try:
            plugin = cls(request=request, reply=reply)
            _prepare(plugin)
            plugin.load_config()
            try:
                plugin.execute()
            except Exception as e:
                raise RPCAborted(str(e))
        except ChoriaExternalException as e:
            _fail(reply, e)


class _ExecJob:
    """Exec mode's request context: no deadline, never cancelled."""

    deadline = None
    cancel_reason = None
    facts = None

    def __init__(self, cancelled: Any) -> None:
        self.cancelled = cancelled


def _prepare(plugin: ChoriaExternal) -> None:
    """Gives the plugin the pool worker's context of the request this
    thread serves (deadline, cancel, facts), if there is one. It is not an
    argument of ``dispatch``, so that agents overriding that classmethod
    with py-mco-agent's signature, ``dispatch(cls, request, reply)``, still
    get it."""
    worker = sys.modules.get("agent_host.worker")
    job = worker.current_job() if worker is not None else None
    if job is not None:
        plugin._job = job
        if job.facts is not None:
            plugin._facts = job.facts


def _fail(reply: Any, e: ChoriaExternalException) -> None:
    # py-mco-agent's statusmsg: the description, then str(e), which starts
    # with the description again ("RPC Aborted: RPC Aborted: boom").
    reply.fail(e.statuscode, "{0}: {1}".format(e.description, str(e)))


class Agent(ChoriaExternal):
    """A Choria external agent.

    Decorate the class with ``@register_actions`` and each action method
    with ``@action``; an action reads ``self.request.data`` and
    ``self.config`` and writes ``self.reply.data`` or calls
    ``self.reply.fail(code, message)``. Override ``should_activate`` to
    decline to run on a node.
    """

    # How many requests a pool worker runs at once, each on its own
    # instance in a thread of its own. Declare more in a subclass when the
    # actions are thread-safe (or pass concurrency= to dispatch).
    concurrency: int = 1

    # Filled per class by @register_actions (each class has its own dict).
    _actions: Dict[str, Callable[..., Any]] = {}

    @staticmethod
    def should_activate() -> bool:
        """Whether the agent is served on this node; only ``True`` activates it."""
        return True

    def execute(self) -> None:
        name = self.request.action
        method = type(self)._actions.get(name)
        if method is None:
            raise UnknownRPCAction(name)
        method(self)

    # py-mco-agent 0.3's name for execute, which its dispatcher called.
    def run(self) -> None:
        self.execute()

    def _run_request(self) -> None:
        """Runs the request's action the way the agent's py-mco-agent did:
        0.3 called ``run()``, 0.4 ``execute()``. A class that overrides
        ``run`` (taking no argument) and not ``execute`` is written for 0.3,
        and its ``run`` is called; otherwise ``execute``. (A ``run`` that
        takes arguments is a helper of the agent's own, never called.)"""
        cls = type(self)
        run = getattr(cls, "run", None)
        if run is not Agent.run and getattr(cls, "execute", None) is Agent.execute and _no_arguments(run):
            self.run()
        else:
            self.execute()

    @classmethod
    def dispatch(cls, request: ProtocolMessage, reply: Reply) -> None:
        """Answers one activation check or RPC request into ``reply``.

        An exception from an action fails the request with code 1 (RPC
        Aborted); an inactive agent answers code 5. An exception raised while
        deciding activation propagates (the process exits 1, and the host
        does not activate the agent).
        """
        try:
            agent = cls(request=request, reply=reply)
            _prepare(agent)
            agent.load_config()
            if isinstance(request, ExternalActivationRequest):
                reply.activate = agent.should_activate() is True  # type: ignore[attr-defined]
            elif isinstance(request, ExternalRPCRequest):
                if not agent.should_activate():
                    raise InactiveAgent()
                try:
                    agent._run_request()
                except Exception as e:
                    raise RPCAborted(str(e))
        except ChoriaExternalException as e:
            if isinstance(request, ExternalActivationRequest):
                raise
            _fail(reply, e)


def _no_arguments(method: Any) -> bool:
    """Whether ``method`` (a function of a class) can be called with ``self`` alone."""
    code = getattr(method, "__code__", None)
    if code is None or not callable(method):
        return False
    required = code.co_argcount - len(getattr(method, "__defaults__", None) or ())
    kwonly = getattr(method, "__kwdefaults__", None) or {}
    return bool(required <= 1 and code.co_kwonlyargcount <= len(kwonly))


def action(method: F) -> F:
    """Marks a method of an ``Agent`` subclass as an action named after it."""
    method._register_action = True  # type: ignore[attr-defined]
    return method


def register_actions(cls: C) -> C:
    """Registers the class's ``@action`` methods, and those of the registered
    classes it derives from, as its actions."""
    actions: Dict[str, Any] = {}
    for base in reversed(cls.__mro__[1:]):
        actions.update(base.__dict__.get("_actions", {}))
    for name, method in cls.__dict__.items():
        if getattr(method, "_register_action", False):
            actions[name] = method
    cls._actions = actions  # type: ignore[attr-defined]
    return cls


__all__ = ["ChoriaExternal", "Agent", "action", "register_actions"]
