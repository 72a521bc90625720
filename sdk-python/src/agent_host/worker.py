"""Pool mode: agent-host's worker protocol (``io.agent-host.worker``, version 1).

When agent-host starts an agent with ``AGENT_HOST_WORKER=io.agent-host.worker``
``dispatch`` hands the agent class to ``serve``, which speaks the protocol of
PROTOCOL.md on the two file descriptors named by ``AGENT_HOST_WORKER_FDS``
(host → worker, worker → host), many requests over the process's life:

* the main thread reads the host's documents and answers ``ping`` at once;
* each request runs in a thread of its own, on a fresh agent instance
  (``cls(request, reply)``, its configuration read again), at most
  ``concurrency`` at a time (the host sends no more);
* documents go out on the worker's descriptor, one whole line per write,
  under a lock; nothing is written to stdout or stderr but log lines.

``serve`` never returns: the process exits 0 after a ``shutdown`` (or at
end of file on the host's stream), 1 when the protocol cannot go on.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from agent_host.exceptions import ChoriaExternalException, InvalidRPCData
from agent_host.protocol import (
    ACTIVATION_REQUEST,
    MAX_DEPTH,
    ActionReply,
    ActivationReply,
    ExternalActivationRequest,
    ExternalRPCRequest,
    schema,
    too_deep,
    validate,
)
from agent_host.version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

PROTOCOL = "io.agent-host.worker"
VERSION = 1
SDK = "agent-host-python/" + __version__
# The largest document before the handshake, either way (PROTOCOL.md 3).
HANDSHAKE_MAX_BYTES = 65536
# A request is marked cancelled this long before its deadline, so that its
# reply reaches the host before the host stops waiting.
DEADLINE_MARGIN = 0.05
# The variables that make a process a worker: children must not see them.
WORKER_VARIABLES = ("AGENT_HOST_WORKER", "AGENT_HOST_WORKER_PROTOCOLS", "AGENT_HOST_WORKER_FDS")
# The longest the deadline timer waits at once: far deadlines are waited
# for in steps (a timeout beyond threading.TIMEOUT_MAX is an error).
LONGEST_WAIT = 3600.0


def _log(level: str, msg: str, **fields: Any) -> None:
    """One JSON log line on stderr, which the host logs at ``level``. Never protocol."""
    doc: Dict[str, Any] = {"level": level, "msg": msg}
    doc.update(fields)
    try:
        _write_all(2, (json.dumps(doc, default=str) + "\n").encode("utf-8"))
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[n:]


def _exit(code: int) -> None:
    """Ends the process at once, whatever threads still run; what the agent
    printed is flushed first, and the facts file removed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    _FACTS.remove()
    os._exit(code)


def _seconds(ms: Any) -> float:
    """Milliseconds (a JSON integer, of any size) as seconds; an integer too
    large for a float is infinitely far."""
    try:
        return float(ms) / 1000.0
    except OverflowError:
        return float("inf") if ms > 0 else float("-inf")


def _deadline(ms: Any) -> Optional[float]:
    """A request's ``deadline_ms`` as ``time.time()``: ``None`` when there is
    none, or when it is too far to be a time (so that ``self.deadline`` and
    ``self.time_left()`` stay finite numbers); the epoch when it is too far
    in the past."""
    if not isinstance(ms, (int, float)) or isinstance(ms, bool):
        return None
    t = _seconds(ms)
    if t == float("inf"):
        return None
    return max(t, 0.0)


class _FactsFile:
    """``CHORIA_EXTERNAL_FACTS`` in pool mode: a file holding the facts, as
    in exec mode, for agents that read it themselves (py-mco-agent has no
    facts API).

    One file per worker, in a directory of its own, replaced (atomically,
    so a reader sees the old facts or the new, never half) whenever a
    request brings facts other than the file's. With concurrency 1 it
    holds the facts of the request being served. With more, the facts of
    the latest request: they are the node's, the same for every request
    but when the node's facts change between two of them. Empty before the
    first request, as for exec mode's activation check; removed when the
    worker exits.
    """

    def __init__(self) -> None:
        self.dir: Optional[str] = None
        self.path: Optional[str] = None
        self.facts: Any = None  # what the file holds (a copy), None: nothing yet
        self.lock = threading.Lock()

    def create(self) -> None:
        import tempfile

        try:
            self.dir = tempfile.mkdtemp(prefix="agent-host-worker-")
            self.path = os.path.join(self.dir, "facts")
            with open(self.path, "w", encoding="utf-8"):
                pass
        except OSError as e:
            _log("error", "cannot create the facts file: CHORIA_EXTERNAL_FACTS is not set", error=str(e))
            self.remove()
            return
        os.environ["CHORIA_EXTERNAL_FACTS"] = self.path

    def update(self, facts: Dict[str, Any]) -> None:
        """Makes the file hold ``facts`` (before the agent sees them)."""
        if self.path is None:
            return
        with self.lock:
            # Compared as Python values (a dict's == costs a fraction of
            # encoding it): facts that change only from true to 1 are
            # not written again.
            if facts == self.facts:
                return
            tmp = self.path + ".new"
            try:
                text = json.dumps(facts, separators=(",", ":"), allow_nan=False)
                with open(tmp, "w", encoding="utf-8") as fp:
                    fp.write(text)
                os.replace(tmp, self.path)
            except (OSError, ValueError) as e:
                _log("error", "cannot write the facts file", error=str(e))
                return
            self.facts = json.loads(text)  # a copy the agent cannot change

    def remove(self) -> None:
        d, self.dir, self.path = self.dir, None, None
        if d is not None:
            import shutil

            shutil.rmtree(d, ignore_errors=True)


_FACTS = _FactsFile()
_current = threading.local()


def current_job() -> Optional[Job]:
    """The context of the request the calling thread serves, or ``None``."""
    return getattr(_current, "job", None)


# The host's documents a worker reads, by type, after the handshake
# (PROTOCOL.md 5-8): each is checked against its published schema.
_SCHEMAS = {kind: "io.agent-host.worker.v1." + kind for kind in ("request", "cancel", "ping", "shutdown")}


def well_formed(doc: Dict[str, Any]) -> bool:
    """Whether a document of a known type is what its schema in
    ``protocol/schemas`` says (required keys, JSON types)."""
    name = _SCHEMAS.get(doc["type"])
    if name is None:
        return True
    try:
        validate(doc, schema(name))
    except InvalidRPCData as e:
        _log("error", "the host sent a %s document that is not valid: ignored" % doc["type"], error=str(e))
        return False
    return True


class Job:
    """One request's context, seen by the agent as ``self.deadline``,
    ``self.cancelled``, ``self.cancel_reason`` and ``self.time_left()``."""

    def __init__(self, id: str, deadline: Optional[float], facts: Dict[str, Any]) -> None:
        self.id = id
        self.deadline = deadline
        self.facts = facts
        self.cancelled = threading.Event()
        self.cancel_reason: Optional[str] = None

    def cancel(self, reason: str) -> None:
        if not self.cancelled.is_set():
            self.cancel_reason = reason
            self.cancelled.set()


def _concurrency(cls: Any, declared: Optional[int]) -> int:
    value = declared if declared is not None else getattr(cls, "concurrency", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        if declared is not None:
            raise ValueError("concurrency must be an integer of at least 1, not %r" % (value,))
        return 1  # not a declaration (an action named concurrency, say)
    return value


class Worker:
    def __init__(self, cls: Any, concurrency: int, in_fd: int, out_fd: int) -> None:
        self.cls = cls
        self.agent = cls.__name__.lower()
        self.concurrency = concurrency
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.limit = HANDSHAKE_MAX_BYTES
        self.ready = False
        self.draining = False
        self.lock = threading.Lock()  # guards inflight and the output stream
        self.inflight: Dict[str, Job] = {}
        self.timers = _Deadlines()

    # -- output ------------------------------------------------------------

    def send_line(self, line: bytes) -> None:
        with self.lock:
            self._send_locked(line)

    def _send_locked(self, line: bytes) -> None:
        try:
            _write_all(self.out_fd, line + b"\n")
        except BrokenPipeError:
            _exit(0)  # the host is gone
        except OSError as e:
            _log("error", "cannot write to the host", error=str(e))
            _exit(1)

    def send(self, doc: Dict[str, Any]) -> None:
        self.send_line(json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8"))

    # -- input -------------------------------------------------------------

    def lines(self) -> Any:
        """The host's stream split into lines, each at most the limit in force."""
        buf = b""
        while True:
            try:
                chunk = os.read(self.in_fd, 1 << 16)
            except InterruptedError:
                continue
            except OSError as e:
                _log("error", "reading the protocol stream", error=str(e))
                _exit(1)
            if not chunk:
                # The host is gone, or wants this worker gone: at once.
                _exit(0)
            buf += chunk
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                line = buf[start:nl]
                start = nl + 1
                if len(line) > self.limit:
                    self.too_large(len(line))
                yield line
            buf = buf[start:]
            if len(buf) > self.limit:
                self.too_large(len(buf))

    def too_large(self, n: int) -> None:
        _log("error", "the host sent a document larger than the limit", bytes=n, max_document_bytes=self.limit)
        _exit(1)

    def decode(self, line: bytes) -> Optional[Dict[str, Any]]:
        if not line.strip():
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            _log("error", "the host sent a line that is not UTF-8: ignored")
            return None
        if too_deep(text):
            _log("error", "the host sent a document nested deeper than %d levels: ignored" % MAX_DEPTH)
            return None
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as e:
            _log("error", "the host sent a line that is not JSON: ignored", error=str(e))
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            _log("error", "the host sent a line that is not a protocol document: ignored")
            return None
        return doc

    # -- the protocol ------------------------------------------------------

    def run(self) -> None:
        for line in self.lines():
            doc = self.decode(line)
            if doc is None:
                continue
            if not self.ready:
                self.hello(doc)
                continue
            if doc.get("v") != VERSION:
                _log("error", "a document of another protocol version: ignored", type=doc["type"], v=doc.get("v"))
                continue
            kind = doc["type"]
            if not well_formed(doc):
                continue
            if kind == "ping":
                self.send({"type": "pong", "v": VERSION, "id": doc.get("id")})
            elif kind == "request":
                self.request(doc)
            elif kind == "cancel":
                with self.lock:
                    job = self.inflight.get(doc.get("id"))  # type: ignore[arg-type]
                if job is not None:
                    job.cancel("cancelled by the host (%s)" % doc.get("reason"))
            elif kind == "shutdown":
                self.shutdown(doc)
            else:
                _log("warn", "a document of an unknown type: ignored", type=kind)

    def hello(self, doc: Dict[str, Any]) -> None:
        if doc["type"] != "hello":
            _log("error", "the host did not start with hello", type=doc["type"])
            _exit(1)
        try:
            validate(doc, schema("io.agent-host.worker.hello"))
        except InvalidRPCData as e:
            _log("error", "the host's hello is not valid", error=str(e))
            _exit(1)
        offered = doc.get("versions")
        if not isinstance(offered, list) or VERSION not in offered:
            self.send({"type": "refuse", "versions": [VERSION],
                       "reason": "%s speaks worker protocol version %d only" % (SDK, VERSION)})
            _log("error", "the host offers worker protocol versions %s; this worker speaks %d" % (json.dumps(offered), VERSION))
            _exit(1)
        # The file is the agent, whatever its class is called: as in exec
        # mode, where the request names the agent, the worker serves the
        # agent the host started it for (its DDL's name).
        if isinstance(doc.get("agent"), str) and doc["agent"]:
            self.agent = doc["agent"]
        activate, reason = self.activation(self.agent)
        ready: Dict[str, Any] = {"type": "ready", "v": VERSION, "sdk": SDK, "agents": [self.agent],
                                 "concurrency": self.concurrency, "activate": activate}
        if reason:
            ready["activate_reason"] = reason
        limit = doc.get("max_document_bytes")
        self.send(ready)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            self.limit = limit
        self.ready = True
        if not activate:
            _exit(0)

    def activation(self, agent: str) -> Any:
        """The agent's activation hook (``should_activate``), as in exec mode."""
        try:
            request = ExternalActivationRequest.from_dict({
                "$schema": "https://choria.io/schemas/mcorpc/external/v1/activation_request.json",
                "protocol": ACTIVATION_REQUEST, "agent": agent})
            reply = ActivationReply()
            self.cls.dispatch(request, reply)
        except Exception as e:
            import traceback

            traceback.print_exc()
            return False, "the activation check failed: %s" % e
        if reply.activate is not True:
            return False, "%s declined activation (should_activate)" % self.agent
        return True, None

    def request(self, doc: Dict[str, Any]) -> None:
        id = doc.get("id")
        if not isinstance(id, str):
            _log("error", "a request without an id: ignored")
            return
        deadline = _deadline(doc.get("deadline_ms"))
        facts = doc.get("facts")
        job = Job(id, deadline, facts if isinstance(facts, dict) else {})
        with self.lock:
            if id in self.inflight:
                _log("error", "a request already in flight: ignored", id=id)
                return
            self.inflight[id] = job
        if self.draining:
            self.finish(job, {"statuscode": 1, "statusmsg": "the worker is shutting down", "data": {}})
            return
        if deadline is not None:
            self.timers.add(deadline - DEADLINE_MARGIN, job, "deadline exceeded")
        t = threading.Thread(target=self.serve_one, args=(job, doc.get("request")), name="request-" + id, daemon=True)
        t.start()

    def serve_one(self, job: Job, request: Any) -> None:
        try:
            reply = self.answer(job, request)
        except BaseException as e:  # never lose a reply
            reply = {"statuscode": 5, "statusmsg": "Unknown error: the SDK failed: %s" % _describe(e), "data": {}}
        self.finish(job, reply)

    def answer(self, job: Job, request: Any) -> Dict[str, Any]:
        try:
            # well_formed checked it: the request schema's AgentRequest is
            # the rpc_request schema (tests/test_schemas.py).
            rpc = ExternalRPCRequest._from_checked(request)
        except ChoriaExternalException as e:
            return {"statuscode": e.statuscode, "statusmsg": "%s: %s" % (e.description, e), "data": {}}
        reply = ActionReply()
        _FACTS.update(job.facts)
        _current.job = job  # for the agent's dispatch (agent._prepare)
        try:
            self.cls.dispatch(rpc, reply)
        except SystemExit as e:
            # In exec mode the process would end and the host fail the
            # request; here only the request fails.
            return {"statuscode": 1, "statusmsg": "RPC Aborted: the action exited (sys.exit(%r))" % (e.code,), "data": {}}
        except Exception as e:
            import traceback

            traceback.print_exc()
            return {"statuscode": 5, "statusmsg": "Unknown error: %s" % e, "data": {}}
        except BaseException as e:
            # KeyboardInterrupt, GeneratorExit...: Agent.dispatch wraps
            # only Exceptions in RPCAborted. Here they end just the request.
            import traceback

            traceback.print_exc()
            return {"statuscode": 1, "statusmsg": "RPC Aborted: the action raised %s" % _describe(e), "data": {}}
        finally:
            _current.job = None
        data = reply.data
        return {"statuscode": reply.statuscode, "statusmsg": reply.statusmsg, "data": data if data is not None else {}}

    def finish(self, job: Job, reply: Dict[str, Any]) -> None:
        doc = {"type": "reply", "v": VERSION, "id": job.id, "reply": reply}
        try:
            text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
            if too_deep(text):
                raise RecursionError
            line = text.encode("utf-8")
        except BaseException as e:
            # Whatever the agent left in its reply, the request gets an answer.
            why = _unsendable(e)
            _log("error", "the reply cannot be sent: the request fails instead", id=job.id, error=why)
            line = json.dumps({"type": "reply", "v": VERSION, "id": job.id, "reply": {
                "statuscode": 1, "statusmsg": "RPC Aborted: the reply cannot be sent: %s" % why,
                "data": {}}}, separators=(",", ":")).encode("utf-8")
        if len(line) > self.limit:
            _log("error", "the reply is larger than the agreed max_document_bytes: the request fails instead",
                 id=job.id, bytes=len(line), max_document_bytes=self.limit)
            line = json.dumps({"type": "reply", "v": VERSION, "id": job.id, "reply": {
                "statuscode": 1,
                "statusmsg": "RPC Aborted: the reply is too large: %d bytes, more than the %d bytes the host accepts"
                % (len(line), self.limit), "data": {}}}, separators=(",", ":")).encode("utf-8")
        with self.lock:
            if self.inflight.pop(job.id, None) is None:
                return
            self._send_locked(line)
            done = self.draining and not self.inflight
        self.timers.remove(job)
        if done:
            _exit(0)

    def shutdown(self, doc: Dict[str, Any]) -> None:
        with self.lock:
            self.draining = True
            empty = not self.inflight
        _log("info", "shutting down", reason=doc.get("reason"), grace_ms=doc.get("grace_ms"))
        if empty:
            _exit(0)
        grace = doc.get("grace_ms")
        grace = _seconds(grace) if isinstance(grace, (int, float)) and not isinstance(grace, bool) and grace > 0 else 5.0
        now = time.time()
        # Near the end of the grace what still runs is cancelled, so that it
        # answers; at its end the worker exits whatever is left.
        with self.lock:
            jobs = list(self.inflight.values())
        for job in jobs:
            self.timers.add(now + max(grace - 0.5, grace / 2), job, "the worker is shutting down")
        self.timers.add(now + max(grace - 0.1, grace * 3 / 4), None, "")


class _Deadlines:
    """One thread that cancels jobs when their time comes (``job`` None: exit)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.entries: List[Any] = []
        self.thread: Optional[threading.Thread] = None

    def add(self, when: float, job: Optional[Job], reason: str) -> None:
        if when != when:  # NaN: never due
            when = float("inf")
        with self.cond:
            self.entries.append((when, job, reason))
            if self.thread is None:
                self.thread = threading.Thread(target=self.loop, name="deadlines", daemon=True)
                self.thread.start()
            self.cond.notify()

    def remove(self, job: Job) -> None:
        with self.cond:
            self.entries = [e for e in self.entries if e[1] is not job]

    def loop(self) -> None:
        while True:
            try:
                self.step()
            except Exception as e:  # nothing may stop the timer
                _log("error", "the deadline timer failed", error=_describe(e))
                time.sleep(0.01)

    def step(self) -> None:
        with self.cond:
            if not self.entries:
                self.cond.wait()
                return
            now = time.time()
            due = [e for e in self.entries if e[0] <= now]
            if not due:
                # Far deadlines in steps: a longer timeout is an error.
                self.cond.wait(max(0.0, min(LONGEST_WAIT, min(e[0] for e in self.entries) - now)))
                return
            self.entries = [e for e in self.entries if e[0] > now]
        for _, job, reason in due:
            if job is None:
                _log("info", "shut down: the grace is over")
                _exit(0)
            job.cancel(reason)


def _describe(e: BaseException) -> str:
    """An exception's type and text: ``KeyboardInterrupt``, ``RuntimeError: boom``."""
    text = str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__


def _unsendable(e: BaseException) -> str:
    """Why a reply cannot be encoded, for its statusmsg."""
    if isinstance(e, RecursionError):
        return "it nests deeper than %d levels" % MAX_DEPTH
    if isinstance(e, ValueError) and str(e).startswith("Out of range float values"):
        return "it holds NaN or Infinity, which JSON cannot carry"
    if isinstance(e, (TypeError, ValueError)):
        return str(e)  # Object of type set is not JSON serializable
    return _describe(e)


def _on_sigterm(signum: int, frame: Any) -> None:
    # The host's SIGTERM after a shutdown's grace (PROTOCOL.md 8): the
    # facts file goes, then the signal ends the process as it would have.
    import signal

    _FACTS.remove()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _watch_stdin() -> None:
    # stdin is a pipe the host never writes; its end of file means the host
    # is gone. Only a pipe or socket says so (not a terminal or /dev/null).
    import stat

    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return

    def watch() -> None:
        while True:
            try:
                if not os.read(0, 4096):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        _exit(0)

    threading.Thread(target=watch, name="stdin", daemon=True).start()


def serve(cls: Any, concurrency: Optional[int] = None) -> None:
    """Serves ``cls`` as a pool worker; never returns."""
    env = os.environ
    fds = env.get("AGENT_HOST_WORKER_FDS", "3,4")
    # Read once, then gone: a child this process starts must not take
    # itself for a worker on the host's streams.
    for key in WORKER_VARIABLES:
        env.pop(key, None)
    try:
        in_fd, out_fd = (int(s.strip()) for s in fds.split(","))
        for fd in (in_fd, out_fd):
            os.set_inheritable(fd, False)
    except (ValueError, OSError) as e:
        _log("error", "AGENT_HOST_WORKER_FDS does not name two open file descriptors", value=fds, error=str(e))
        _exit(1)
    try:
        n = _concurrency(cls, concurrency)
    except ValueError as e:
        _log("error", str(e))
        _exit(1)
    # What the agent prints reaches the log line by line, not when a
    # buffer fills (stdout is a pipe, block-buffered by default).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except Exception:
            pass
    _watch_stdin()
    _FACTS.create()
    try:
        import signal

        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        pass  # not the main thread
    Worker(cls, n, in_fd, out_fd).run()
    _exit(0)


__all__ = ["serve", "too_deep", "current_job", "Job", "PROTOCOL", "VERSION", "SDK"]
