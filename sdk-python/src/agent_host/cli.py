"""``python -m agent_host run``: an agent run once, as Choria runs it, for its author.

``run AGENTFILE ACTION [key=value ...]`` builds the request a Choria client
would send, runs the agent's activation check and then the request through
the external-agent file protocol (PROTOCOL.md, section 1: argv, the
``CHORIA_EXTERNAL_*`` variables and ``PATH``, nothing else), shows what the
agent writes on stdout and stderr as a host's log would, and prints the
reply. Nothing here is imported by agents.

Exit status: 0 when the reply's statuscode is 0, 1 when the agent answered
a failure, 2 for a usage or DDL error (nothing was run, or only the
activation check), 3 when the agent did not activate, crashed, timed out or
wrote no valid reply (one Choria cannot read included), 128 + the signal
when SIGTERM, SIGHUP or SIGINT stopped the runner (the agent's process
group killed and the temporary directory removed first).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import IO, Any, Dict, List, NoReturn, Optional, Sequence, Tuple

from agent_host.protocol import ACTIVATION_REQUEST, RPC_REQUEST, too_deep
from agent_host.version import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKEN = 3

# Choria allows an activation check 2 seconds, and an action its DDL's
# metadata.timeout (10 s when the DDL does not say).
ACTIVATION_TIMEOUT = 2.0
DEFAULT_TIMEOUT = 10.0

_NAME = re.compile(r"[a-z0-9_]+")
# <name>-<os>_<arch>, Choria's per-platform executables in a <name>/ directory.
_PLATFORM = re.compile(r"([a-z0-9_]+)-[a-z0-9]+_[a-z0-9]+")
# What a Choria client accepts for a boolean: mco's true/yes/1, false/no/0,
# and choria's (Go's strconv.ParseBool) t/f; case does not matter.
_TRUE = ("true", "yes", "y", "t", "1")
_FALSE = ("false", "no", "n", "f", "0")
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Choria's and agent-host req's integers are 64-bit.
_INT64 = (-(1 << 63), (1 << 63) - 1)
# How deeply the request may nest arrays and objects: agent-host's limit
# for a request body ({"agent", "action", "data": {...}}, the request
# document's shape), so a value of the data nests at most 126 levels; and
# the facts, at most 128 (protocol/limits.go's MaxDataDepth).
MAX_REQUEST_DEPTH = 128
MAX_VALUE_DEPTH = MAX_REQUEST_DEPTH - 2
_SHELL_UNSAFE = ("`", "$", ";", "|", "&&", ">", "<")


class UsageError(Exception):
    """The command line, the DDL or the inputs are wrong: exit 2."""


class AgentError(Exception):
    """The agent did not activate, crashed, timed out or wrote no valid reply: exit 3."""


class Stopped(BaseException):
    """SIGTERM, SIGHUP or SIGINT reached the runner: exit 128 + the signal."""

    def __init__(self, signum: int) -> None:
        BaseException.__init__(self, signum)
        self.signum = signum


# -- finding the agent and its DDL -----------------------------------------


def locate(path: str, agent: Optional[str], ddl: Optional[str]) -> Tuple[str, str, Optional[str]]:
    """The executable, the agent's name and its DDL file (``None`` without one).

    Choria's layouts: ``<dir>/<name>`` beside ``<dir>/<name>.json``, and
    ``<dir>/<name>/<name>-<os>_<arch>`` beside ``<dir>/<name>.json``. A
    directory ``<name>/`` stands for ``<name>/<name>``.
    """
    if os.path.isdir(path):
        path = os.path.join(path, os.path.basename(os.path.normpath(path)))
    if not os.path.isfile(path):
        raise UsageError("%s: no such agent file" % path)
    here = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    name, ddl_dir = base, here
    m = _PLATFORM.fullmatch(base)
    if m and os.path.basename(here) == m.group(1):
        name, ddl_dir = m.group(1), os.path.dirname(here)
    if agent is not None:
        name = agent
    if not _NAME.fullmatch(name):
        raise UsageError("%r is not an agent name (lower-case letters, digits and _): name it with --agent" % name)
    if ddl is None:
        candidate = os.path.join(ddl_dir, name + ".json")
        ddl = candidate if os.path.isfile(candidate) else None
    elif not os.path.isfile(ddl):
        raise UsageError("%s: no such DDL file" % ddl)
    return path, name, ddl


def load_ddl(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as fp:
            doc = json.load(fp)
    except (OSError, ValueError, RecursionError) as e:
        raise UsageError("cannot read the DDL %s: %s" % (path, e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("actions", []), list):
        raise UsageError("the DDL %s is not a JSON DDL (an object with a list of actions)" % path)
    return doc


def find_action(ddl: Dict[str, Any], agent: str, action: str) -> Dict[str, Any]:
    actions = [a for a in ddl.get("actions", []) if isinstance(a, dict)]
    for a in actions:
        if a.get("action") == action:
            inputs = a.get("input") or {}
            if not isinstance(inputs, dict) or not all(isinstance(i, dict) for i in inputs.values()):
                raise UsageError("the DDL's inputs of action '%s' are not objects" % action)
            return a
    names = ", ".join(sorted(str(a.get("action")) for a in actions)) or "none"
    raise UsageError("action '%s' is not declared in the DDL of agent '%s' (its actions: %s)" % (action, agent, names))


def ddl_timeout(ddl: Optional[Dict[str, Any]]) -> float:
    meta = ddl.get("metadata") if ddl else None
    t = meta.get("timeout") if isinstance(meta, dict) else None
    if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0:
        return float(t)
    return DEFAULT_TIMEOUT


# -- the request's data ------------------------------------------------------


class TooDeep(ValueError):
    """A value nests too deeply to be sent."""


def _json(text: str, depth: int) -> Any:
    """JSON as a Choria client reads and sends it: no NaN or Infinity and no
    number beyond a float's range (Go's decoder refuses them), nested at
    most ``depth`` levels (``TooDeep``). ``ValueError`` otherwise."""
    def refuse(name: str) -> NoReturn:
        raise ValueError(name)

    def number(text: str) -> float:
        f = float(text)
        if not math.isfinite(f):
            raise ValueError(text)
        return f

    def integer(text: str) -> int:
        n = int(text)
        float(n)  # OverflowError beyond a float's range
        return n

    if too_deep(text, depth):
        raise TooDeep("it nests more than %d levels deep" % depth)
    try:
        return json.loads(text, parse_constant=refuse, parse_float=number, parse_int=integer)
    except (OverflowError, RecursionError) as e:
        raise ValueError(str(e)) from None


def _json_value(text: str) -> Any:
    return _json(text, MAX_VALUE_DEPTH)


def convert(typ: str, raw: str) -> Any:
    """``raw`` as the DDL type ``typ``, as a Choria client converts it; ``ValueError`` says why not."""
    t = typ.lower()
    if t in ("integer", "int"):
        # At most 20 characters: int() refuses thousands of digits itself.
        if not _INTEGER.fullmatch(raw) or len(raw) > 20 or not _INT64[0] <= int(raw) <= _INT64[1]:
            raise ValueError("'%s' is not a valid integer" % raw)
        return int(raw)
    if t in ("float", "number"):
        try:
            f = float(raw)
        except ValueError:
            f = math.nan
        if not math.isfinite(f) or "_" in raw or raw != raw.strip():
            raise ValueError("'%s' is not a valid float" % raw)
        return f
    if t in ("string", "list"):
        return raw
    if t == "boolean":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError("'%s' is not a valid boolean" % raw)
    if t in ("hash", "array"):
        want = dict if t == "hash" else list
        try:
            v = _json_value(raw)
        except TooDeep:
            raise
        except ValueError:
            v = None
        if not isinstance(v, want):
            raise ValueError("'%s' is not a valid JSON string with %s inside" % (raw, "a hash" if t == "hash" else "an array"))
        return v
    raise ValueError("unsupported type '%s'" % typ)


def check(item: Dict[str, Any], value: Any) -> str:
    """Choria's reason for refusing a converted value of an input, or ``""``."""
    t = str(item.get("type", "")).lower()
    if t == "list":
        choices = item.get("list") or []
        if not choices:
            return "input type of list without a valid list of items in DDL"
        if value not in choices:
            return "should be one of %s" % ", ".join(str(c) for c in choices)
        return ""
    if t != "string":
        return ""
    maxlength = item.get("maxlength") or 0
    if not isinstance(maxlength, int) or maxlength <= 0:
        return ""  # Choria validates a string only when it has a maxlength
    if len(value.encode("utf-8")) > maxlength:
        return "is longer than %d characters" % maxlength
    validation = item.get("validation") or ""
    if not isinstance(validation, str) or not validation:
        return ""
    if validation == "shellsafe":
        for bad in _SHELL_UNSAFE:
            if bad in value:
                return "may not contain '%s'" % bad
        return ""
    if validation in ("ipv4address", "ipv6address", "ipaddress"):
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            ip = None
        want = {"ipv4address": (4, "an IPv4"), "ipv6address": (6, "an IPv6"), "ipaddress": (0, "an IP")}[validation]
        if ip is None or (want[0] and ip.version != want[0]):
            return "%s is not %s address" % (value, want[1])
        return ""
    if validation[0].islower():
        return ""  # Choria warns about an unknown validator and ignores it
    try:
        if not re.search(validation, value):
            return "input does not match '%s'" % validation
    except re.error:
        return "invalid regex '%s'" % validation
    return ""


def guess(raw: str) -> Any:
    """A value typed without a DDL, as ``agent-host req`` types it: whole
    numbers (without a leading zero), ``true`` and ``false``, and JSON
    objects and arrays as such; anything else, decimals included (a version
    such as 1.10 is text more often than not), as text."""
    if _INTEGER.fullmatch(raw) and len(raw) <= 20 and _INT64[0] <= int(raw) <= _INT64[1]:
        digits = raw[1:] if raw.startswith("-") else raw
        if raw == "0" or not digits.startswith("0"):
            return int(raw)
    if raw in ("true", "false"):
        return raw == "true"
    if raw.startswith(("{", "[")):
        try:
            return _json_value(raw)
        except TooDeep:
            raise
        except ValueError:
            pass
    return raw


def build_data(pairs: Sequence[str], action: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The request's data from ``key=value`` arguments.

    With the action's DDL, as ``choria req`` builds it: each value converted
    to its input's type and validated, undeclared inputs refused, missing
    inputs given their default, or refused when required. Without a DDL, by
    how the value looks (``guess``).
    """
    raw: Dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError("%r is not key=value" % pair)
        raw[key.lower() if action is not None else key] = value
    if action is None:
        data = {}
        for key, value in raw.items():
            try:
                data[key] = guess(value)
            except TooDeep as e:
                raise UsageError("invalid value for '%s': %s" % (key, e)) from None
        return data

    inputs: Dict[str, Dict[str, Any]] = action.get("input") or {}
    data = {}
    for key, value in raw.items():
        item = inputs.get(key)
        if item is None:
            declared = ", ".join(sorted(inputs)) or "none"
            raise UsageError("input '%s' has not been declared (the inputs of '%s': %s)" % (key, action["action"], declared))
        try:
            converted = convert(str(item.get("type", "")), value)
        except ValueError as e:
            raise UsageError("invalid value for '%s': %s" % (key, e)) from None
        reason = check(item, converted)
        if reason:
            raise UsageError("invalid value for '%s': %s" % (key, reason))
        data[key] = converted
    for name in sorted(inputs):
        if name in data:
            continue
        item = inputs[name]
        if item.get("default") is not None:
            data[name] = item["default"]
        elif not item.get("optional", False):
            raise UsageError("input '%s' is required" % name)
    return data


def rpc_request(agent: str, action: str, data: Dict[str, Any]) -> Dict[str, Any]:
    """The request document Choria writes for a call from this user on this host."""
    return {
        "$schema": "https://choria.io/schemas/mcorpc/external/v1/rpc_request.json",
        "protocol": RPC_REQUEST,
        "agent": agent,
        "action": action,
        "requestid": uuid.uuid4().hex,
        "senderid": socket.gethostname(),
        "callerid": "user=%s" % _login(),
        "collective": "mcollective",
        "ttl": 60,
        "msgtime": int(time.time()),
        "data": data,
    }


def activation_request(agent: str) -> Dict[str, Any]:
    return {
        "$schema": "https://choria.io/schemas/mcorpc/external/v1/activation_request.json",
        "protocol": ACTIVATION_REQUEST,
        "agent": agent,
    }


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry (some containers)
        return str(os.getuid())


# -- running the agent -------------------------------------------------------


def is_python(path: str) -> bool:
    """Whether the file's first line is a shebang naming python (or it is a ``.py``)."""
    try:
        with open(path, "rb") as fp:
            first = fp.readline(512)
    except OSError:
        return False
    return (first.startswith(b"#!") and b"python" in first) or path.endswith(".py")


class Call:
    """One run of the agent's executable for one document, in ``work``."""

    def __init__(self, work: str, exe: str, label: str, config: str) -> None:
        self.work = work
        self.exe = exe
        self.label = label
        self.config = config
        self.lock = threading.Lock()

    def run(self, protocol: str, doc: Dict[str, Any], facts: str, timeout: float) -> str:
        """Runs the agent; returns its reply document's text (``AgentError`` otherwise)."""
        request, reply, facts_file = (os.path.join(self.work, n) for n in ("request", "reply", "facts"))
        for path, text in ((request, json.dumps(doc, separators=(",", ":"), allow_nan=False)), (reply, ""), (facts_file, facts)):
            with open(path, "w", encoding="utf-8") as fp:
                fp.write(text)
        env = {
            "CHORIA_EXTERNAL_REQUEST": request,
            "CHORIA_EXTERNAL_REPLY": reply,
            "CHORIA_EXTERNAL_PROTOCOL": protocol,
            "CHORIA_EXTERNAL_CONFIG": self.config,
            "CHORIA_EXTERNAL_FACTS": facts_file,
            "PATH": os.environ.get("PATH", os.defpath),
        }
        # Choria's argv: the agent, the two files and the RPC protocol
        # (even for an activation check). A Python agent runs on this
        # interpreter, so that it gets this environment's SDK.
        argv = [os.path.abspath(self.exe), request, reply, RPC_REQUEST]
        if is_python(self.exe):
            argv.insert(0, sys.executable)
        elif not os.access(self.exe, os.X_OK):
            raise UsageError("%s is not executable (chmod +x, as Choria needs it)" % self.exe)
        try:
            proc = subprocess.Popen(argv, env=env, cwd=self.work, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise AgentError("%s: cannot start %s: %s" % (self.label, self.exe, e)) from None
        assert proc.stdout is not None and proc.stderr is not None
        readers = [threading.Thread(target=self.relay, args=(stream, name), daemon=True)
                   for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
        for t in readers:
            t.start()
        try:
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(proc.pid)
                proc.wait()
                self.join(readers)
                raise AgentError("%s timed out after %s s: its process group was killed" % (self.label, _seconds(timeout))) from None
        except (KeyboardInterrupt, Stopped):
            self.kill(proc.pid)
            proc.wait()
            raise
        if self.kill(proc.pid):
            self.say("the agent left processes behind in its process group: killed")
        self.join(readers)
        if code < 0:
            raise AgentError("%s failed: the agent was killed by signal %d" % (self.label, -code))
        if code != 0:
            raise AgentError("%s failed: the agent exited with status %d (Choria ignores its reply then)" % (self.label, code))
        with open(reply, "r", encoding="utf-8", errors="replace") as fp:
            return fp.read()

    @staticmethod
    def kill(pgid: int) -> bool:
        """Kills what is left of the process group; whether anything was."""
        try:
            os.killpg(pgid, 0)
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    @staticmethod
    def join(readers: List[threading.Thread]) -> None:
        for t in readers:
            t.join(5)

    def relay(self, stream: IO[bytes], name: str) -> None:
        """Shows each line the agent writes on ``name``, as a host logs it."""
        with stream:
            for line in stream:
                self.say(line.decode("utf-8", errors="replace").rstrip("\n"), name)

    def say(self, text: str, stream: str = "") -> None:
        prefix = "[%s%s] " % (self.label, " " + stream if stream else "")
        with self.lock:
            sys.stderr.write(prefix + text + "\n")
            sys.stderr.flush()


def _seconds(t: float) -> str:
    return ("%.3f" % t).rstrip("0").rstrip(".")


def check_reply(label: str, text: str) -> Dict[str, Any]:
    """The reply document, checked as Choria decodes it (``AgentError`` if it cannot)."""
    if not text.strip():
        raise AgentError("%s failed: the agent wrote no reply" % label)
    if too_deep(text, MAX_REQUEST_DEPTH):
        raise AgentError("%s failed: the reply nests more than %d levels deep (agent-host refuses it)"
                         % (label, MAX_REQUEST_DEPTH))

    def refuse(name: str) -> NoReturn:
        # Python writes and reads NaN and Infinity; JSON has no such
        # thing, and Choria's decoder refuses them.
        raise AgentError("%s failed: the reply is not valid JSON for Choria: %s" % (label, name))

    try:
        doc = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError) as e:
        raise AgentError("%s failed: the reply is not JSON: %s" % (label, e)) from None
    if not isinstance(doc, dict):
        raise AgentError("%s failed: the reply is not a JSON object" % label)
    code = doc.get("statuscode", 0)
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
        raise AgentError("%s failed: the reply's statuscode is not an integer from 0 to 255" % label)
    if not isinstance(doc.get("statusmsg", ""), str):
        raise AgentError("%s failed: the reply's statusmsg is not a string" % label)
    if "data" not in doc or not (doc["data"] is None or isinstance(doc["data"], dict)):
        raise AgentError("%s failed: the reply's data is not a JSON object (or null)" % label)
    return doc


# -- the command -------------------------------------------------------------


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog + " run",
        description="Run a Choria external agent once, as Choria runs it (the file protocol), "
                    "against a request built from key=value arguments, and print its reply.",
        epilog="Exit status: 0 statuscode 0; 1 the agent answered a failure; 2 usage or DDL error; "
               "3 the agent did not activate, crashed, timed out or wrote no valid reply; "
               "128+N stopped by signal N.")
    p.add_argument("agentfile", metavar="AGENTFILE", help="the agent's executable (its DDL <name>.json beside it types the inputs)")
    p.add_argument("action", metavar="ACTION")
    p.add_argument("inputs", metavar="key=value", nargs="*", default=[], help="the request's data")
    p.add_argument("--agent", metavar="NAME", help="the agent's name (default: the file's name)")
    p.add_argument("--ddl", metavar="FILE", help="the agent's DDL (default: <dir>/<agent>.json, if there is one)")
    p.add_argument("--config", metavar="FILE", help="the agent's configuration file (plugin.d/<agent>; default: none)")
    p.add_argument("--facts", metavar="FILE", help="the node's facts, a JSON object (default: {})")
    p.add_argument("--timeout", metavar="SECONDS", type=float,
                   help="kill the agent after this long (default: the DDL's timeout, else %s)" % _seconds(DEFAULT_TIMEOUT))
    p.add_argument("--json", action="store_true", help="print only the reply document, as the agent wrote it")
    return p


def run(args: argparse.Namespace) -> int:
    exe, agent, ddl_path = locate(args.agentfile, args.agent, args.ddl)
    if not _NAME.fullmatch(args.action):
        raise UsageError("%r is not an action name (lower-case letters, digits and _)" % args.action)
    ddl = load_ddl(ddl_path) if ddl_path else None
    action = find_action(ddl, agent, args.action) if ddl is not None else None
    data = build_data(args.inputs, action)
    timeout = args.timeout if args.timeout is not None else ddl_timeout(ddl)
    if not timeout > 0:
        raise UsageError("--timeout must be more than 0 seconds")
    facts = "{}"
    if args.facts:
        try:
            with open(args.facts, "r", encoding="utf-8") as fp:
                text = fp.read()
            loaded = _json(text, MAX_REQUEST_DEPTH)
        except TooDeep:
            raise UsageError("the facts %s nest more than %d levels deep" % (args.facts, MAX_REQUEST_DEPTH)) from None
        except (OSError, ValueError) as e:
            raise UsageError("cannot read the facts %s: %s" % (args.facts, e)) from None
        if not isinstance(loaded, dict):
            raise UsageError("the facts %s are not a JSON object" % args.facts)
        facts = json.dumps(loaded, separators=(",", ":"), allow_nan=False)
    if args.config and not os.path.isfile(args.config):
        raise UsageError("%s: no such configuration file" % args.config)

    work = tempfile.mkdtemp(prefix="agent-host-run-")
    try:
        plugin_d = os.path.join(work, "etc", "plugin.d")
        os.makedirs(plugin_d)
        config = os.path.join(plugin_d, agent)
        if args.config:
            shutil.copyfile(args.config, config)

        # The activation check first, as Choria does when it loads the
        # agent: an empty facts file, Choria's 2 seconds.
        label = "%s activation" % agent
        text = Call(work, exe, label, config).run(ACTIVATION_REQUEST, activation_request(agent), "", ACTIVATION_TIMEOUT)
        try:
            activation = json.loads(text)
        except (ValueError, RecursionError):
            activation = None
        if not isinstance(activation, dict) or activation.get("activate") is not True:
            why = "answered %s" % text.strip() if text.strip() else "wrote no reply"
            raise AgentError("%s did not activate: its activation check %s" % (agent, why))

        label = "%s#%s" % (agent, args.action)
        text = Call(work, exe, label, config).run(RPC_REQUEST, rpc_request(agent, args.action, data), facts, timeout)
        reply = check_reply(label, text)
    finally:
        with _Signals.held():  # a signal now is acted on once the directory is gone
            shutil.rmtree(work, ignore_errors=True)

    if args.json:
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(json.dumps(reply, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return EXIT_OK if reply.get("statuscode", 0) == 0 else EXIT_FAILED


class _Signals:
    """While running: SIGTERM, SIGHUP and SIGINT raise ``Stopped`` (once), so
    that the agent's process group is killed and the temporary directory
    removed on the way out, as after a timeout."""

    NAMES = ("SIGTERM", "SIGHUP", "SIGINT")

    def __init__(self) -> None:
        self.old: Dict[int, Any] = {}
        self.fired = False

    @classmethod
    def numbers(cls) -> List[int]:
        return [getattr(signal, n) for n in cls.NAMES if hasattr(signal, n)]

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.numbers():
                self.old[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum: int, frame: Any) -> None:
        if not self.fired:
            self.fired = True
            raise Stopped(signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)

    @classmethod
    def held(cls) -> Any:
        """A context in which those signals wait."""
        import contextlib

        @contextlib.contextmanager
        def hold() -> Any:
            if not hasattr(signal, "pthread_sigmask"):
                yield
                return
            signal.pthread_sigmask(signal.SIG_BLOCK, cls.numbers())
            try:
                yield
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, cls.numbers())

        return hold()


USAGE = """usage: {prog} run AGENTFILE ACTION [key=value ...] [options]

Run a Choria external agent once, as Choria runs it, and print its reply.
'{prog} run --help' lists the options.
"""


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """The command line: ``run AGENTFILE ACTION [key=value ...]``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if prog is None:
        prog = os.path.basename(sys.argv[0]) or "agent-host-python"
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE.format(prog=prog))
        return EXIT_OK if args else EXIT_USAGE
    if args[0] == "--version":
        sys.stdout.write("agent-host-python %s\n" % __version__)
        return EXIT_OK
    if args[0] != "run":
        sys.stderr.write("%s: unknown command %r (try: run)\n" % (prog, args[0]))
        return EXIT_USAGE
    # key=value arguments and options in any order.
    parsed = _parser(prog).parse_intermixed_args(args[1:])
    try:
        with _Signals():
            return run(parsed)
    except UsageError as e:
        sys.stderr.write("%s run: %s\n" % (prog, e))
        return EXIT_USAGE
    except AgentError as e:
        sys.stderr.write("%s run: %s\n" % (prog, e))
        return EXIT_BROKEN
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Stopped as e:
        return 128 + e.signum


__all__ = ["main", "build_data", "convert", "check", "guess", "locate", "rpc_request", "activation_request"]
