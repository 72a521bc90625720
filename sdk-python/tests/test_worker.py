"""Pool mode: agents run as agent-host workers over real pipes on fds 3 and 4."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import (ACTIVATION, AGENTS, PYCOMPAT, REPO, activation_request, nesting, rpc_request, schema_errors,
                      strict_json)

WORKERKIT = AGENTS / "workerkit"
WRAPPED = AGENTS / "wrapped"
OLDRUN = AGENTS / "oldrun"
POOLTEST = REPO / "testdata" / "agents-src" / "pypool" / "pooltest"
VECTORS = REPO / "testdata" / "vectors" / "worker"
# The documents a worker writes, by type, and their schemas in protocol/schemas.
WORKER_SCHEMAS = {"ready": "io.agent-host.worker.v1.ready", "reply": "io.agent-host.worker.v1.reply",
                  "pong": "io.agent-host.worker.v1.pong", "refuse": "io.agent-host.worker.refuse"}


def vector(name: str) -> Dict[str, Any]:
    return json.loads((VECTORS / (name + ".json")).read_text())


def hello(agent: str, **over: Any) -> Dict[str, Any]:
    doc = {"type": "hello", "versions": [1], "host": "agent-host/0.1.0", "agent": agent,
           "max_document_bytes": 2097152, "handshake_ms": 10000}
    doc.update(over)
    return doc


class Worker:
    """An agent started as agent-host starts a worker: fds 3 and 4 pipes,
    stdin a pipe never written, the worker variables and nothing else."""

    def __init__(self, tmp: Path, exe: Path, env: Optional[Dict[str, str]] = None) -> None:
        to_worker_r, self.to_worker = os.pipe()
        self.from_worker, from_worker_w = os.pipe()
        stdin_r, self.stdin_w = os.pipe()
        plugin_d = tmp / "plugin.d"
        plugin_d.mkdir(exist_ok=True)
        work = tmp / "work"
        work.mkdir(exist_ok=True)
        full_env = {
            "AGENT_HOST_WORKER": "io.agent-host.worker",
            "AGENT_HOST_WORKER_PROTOCOLS": "1",
            "AGENT_HOST_WORKER_FDS": "3,4",
            "CHORIA_EXTERNAL_CONFIG": str(plugin_d / exe.name),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        }
        full_env.update(env or {})

        def fds() -> None:  # in the child: the pipes become fds 3 and 4
            a, b = os.dup(to_worker_r), os.dup(from_worker_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [str(exe)], env=full_env, cwd=str(work), stdin=stdin_r,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=fds, pass_fds=(3, 4))
        for fd in (to_worker_r, from_worker_w, stdin_r):
            os.close(fd)
        self.docs: "queue.Queue[Optional[Dict[str, Any]]]" = queue.Queue()
        self.raw: List[bytes] = []
        self.invalid: List[str] = []
        self.out: List[bytes] = []
        self.err: List[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.drains = [threading.Thread(target=self._drain, args=(stream, into), daemon=True)
                       for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.drains:
            t.start()

    def _read(self) -> None:
        with os.fdopen(self.from_worker, "rb") as fp:
            for line in fp:
                self.raw.append(line)
                # What the host's Go decoder reads: JSON without NaN or
                # Infinity, nested at most 132 levels (PROTOCOL.md 3).
                try:
                    doc = strict_json(line)
                except ValueError as e:
                    self.invalid.append("not JSON: %s: %r" % (e, line[:200]))
                    doc = json.loads(line)
                if nesting(line.decode()) > 132:
                    self.invalid.append("nested deeper than 132 levels: %r" % line[:200])
                # Every document a worker writes is checked against its
                # published schema; the fixture fails the test on an error.
                name = WORKER_SCHEMAS.get(doc.get("type"))
                self.invalid += schema_errors(name, doc) if name else ["unknown type %r" % doc.get("type")]
                self.docs.put(doc)
        self.docs.put(None)

    @staticmethod
    def _drain(stream: Any, into: List[bytes]) -> None:
        for line in stream:
            into.append(line)

    def send_line(self, line: str) -> None:
        os.write(self.to_worker, line.encode("utf-8") + b"\n")

    def send(self, doc: Dict[str, Any]) -> None:
        self.send_line(json.dumps(doc, separators=(",", ":")))

    def next(self, timeout: float = 10) -> Optional[Dict[str, Any]]:
        return self.docs.get(timeout=timeout)

    def handshake(self, agent: str, **over: Any) -> Dict[str, Any]:
        self.send(hello(agent, **over))
        ready = self.next()
        assert ready is not None and ready["type"] == "ready", (ready, self.stderr)
        return ready

    def request(self, id: str, agent: str, action: str, data: Optional[Dict[str, Any]] = None,
                deadline_in: float = 30, **over: Any) -> None:
        doc = {"type": "request", "v": 1, "id": id, "deadline_ms": int((time.time() + deadline_in) * 1000),
               "request": rpc_request(agent, action, data), "facts": {}}
        doc.update(over)
        self.send(doc)

    def replies(self, n: int, timeout: float = 10) -> Dict[str, Dict[str, Any]]:
        got: Dict[str, Dict[str, Any]] = {}
        end = time.time() + timeout
        while len(got) < n:
            doc = self.next(max(0.01, end - time.time()))
            assert doc is not None and doc["type"] == "reply", (doc, self.stderr)
            got[doc["id"]] = doc["reply"]
        return got

    def call(self, id: str, agent: str, action: str, data: Optional[Dict[str, Any]] = None, **kw: Any) -> Dict[str, Any]:
        self.request(id, agent, action, data, **kw)
        return self.replies(1)[id]

    def wait(self, timeout: float = 10) -> int:
        code = self.proc.wait(timeout)
        for t in self.drains:  # everything it wrote on stdout and stderr read
            t.join(timeout)
        return code

    def wait_stderr(self, text: str, timeout: float = 10) -> bool:
        end = time.time() + timeout
        while text not in self.stderr:
            if time.time() > end:
                return False
            time.sleep(0.01)
        return True

    @property
    def stdout(self) -> str:
        return b"".join(self.out).decode()

    @property
    def stderr(self) -> str:
        return b"".join(self.err).decode()

    def close(self) -> None:
        for fd in (self.to_worker, self.stdin_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(5)


@pytest.fixture
def worker(tmp_path: Path) -> Any:
    started: List[Worker] = []

    def start(exe: Path = WORKERKIT, env: Optional[Dict[str, str]] = None) -> Worker:
        w = Worker(tmp_path, exe, env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()
    for w in started:
        assert not w.invalid, "the worker wrote documents its schemas refuse: %s" % w.invalid


def test_handshake_native_concurrency_from_the_class(worker):
    w = worker(POOLTEST)
    ready = w.handshake("pooltest")
    assert ready == {"type": "ready", "v": 1, "sdk": "agent-host-python/0.1.0", "agents": ["pooltest"],
                     "concurrency": 4, "activate": True}
    # The ready vector's shape, key for key.
    assert set(ready) == set(json.loads(vector("ready")["line"]))


def test_handshake_concurrency_from_dispatch_and_a_later_host(worker):
    w = worker()
    w.send_line(vector("hello_future_versions")["line"].replace('"parrot"', '"workerkit"'))
    ready = w.next()
    assert ready["v"] == 1 and ready["concurrency"] == 3 and ready["agents"] == ["workerkit"]


def test_serves_the_agent_it_was_started_for(worker):
    # The file is the agent: a DDL named otherwise than its class (here
    # my_kit for class Workerkit) is served under the DDL's name.
    w = worker()
    ready = w.handshake("my_kit")
    assert ready["agents"] == ["my_kit"] and ready["activate"] is True
    w.request("1", "my_kit", "echo", {"message": "hi"})
    reply = w.next()
    assert reply["type"] == "reply" and reply["id"] == "1", (reply, w.stderr)


def test_refuses_without_version_1(worker):
    w = worker()
    w.send(hello("workerkit", versions=[2, 3]))
    refuse = w.next()
    assert refuse["type"] == "refuse" and refuse["versions"] == [1] and "v" not in refuse
    assert w.wait() != 0


def test_activation_declined_in_the_handshake(worker, tmp_path):
    w = worker()
    (tmp_path / "plugin.d" / "workerkit").write_text("activate=false\n")
    ready = w.handshake("workerkit")
    assert ready["activate"] is False and "should_activate" in ready["activate_reason"]
    assert w.wait() == 0


def test_vectors_request_ping_shutdown(worker):
    w = worker(POOLTEST)
    w.handshake("pooltest")
    w.send_line(vector("request")["line"])  # parrot's echo, deadline in 2026
    w.send_line(vector("ping")["line"])
    docs = [w.next(), w.next()]
    assert {d["type"] for d in docs} == {"pong", "reply"}
    pong = next(d for d in docs if d["type"] == "pong")
    assert pong == json.loads(vector("pong")["line"])
    reply = next(d for d in docs if d["type"] == "reply")
    assert reply["id"] == "17" and reply["reply"]["statuscode"] == 0
    assert reply["reply"]["data"]["message"] == "hello"
    w.send_line(vector("shutdown")["line"])
    assert w.wait(5) == 0


def test_not_documents_are_ignored(worker):
    w = worker(POOLTEST)
    w.handshake("pooltest")
    for name in sorted(p.stem for p in VECTORS.glob("bad_*.json")):
        w.send_line(vector(name)["line"])
    w.send_line('{"type":"progress","v":1}')
    w.send({"type": "ping", "v": 1, "id": "after"})
    assert w.next() == {"type": "pong", "v": 1, "id": "after"}
    assert w.proc.poll() is None
    assert w.wait_stderr("nested deeper than 132"), w.stderr


def test_requests_run_concurrently_and_ping_answers_at_once(worker):
    w = worker(POOLTEST)
    w.handshake("pooltest")
    start = time.time()
    for i in range(4):
        w.request(str(i), "pooltest", "sleep", {"ms": 500})
    w.send({"type": "ping", "v": 1, "id": "p-1"})
    # Before any of the sleeps' replies: the reader does not wait for actions.
    assert w.next() == {"type": "pong", "v": 1, "id": "p-1"}
    replies = w.replies(4)
    assert sorted(replies) == ["0", "1", "2", "3"]
    assert all(r["statuscode"] == 0 for r in replies.values())
    assert time.time() - start < 1.5


def test_fresh_instance_per_request_facts_config_deadline(worker, tmp_path):
    w = worker()
    (tmp_path / "plugin.d" / "workerkit").write_text("colour = blue\n")
    w.handshake("workerkit")
    deadline_ms = int((time.time() + 20) * 1000)
    a = w.call("a", "workerkit", "info", deadline_ms=deadline_ms, facts={"os": {"family": "Debian"}})
    b = w.call("b", "workerkit", "info")
    assert a["statuscode"] == 0, a
    assert a["data"]["pid"] == b["data"]["pid"]
    assert a["data"]["seen_before"] is None and b["data"]["seen_before"] is None
    assert (a["data"]["served"], b["data"]["served"]) == (1, 2)  # module state is the process's
    assert a["data"]["facts"] == {"os": {"family": "Debian"}} and b["data"]["facts"] == {}
    assert a["data"]["config"] == {"colour": "blue"}
    assert a["data"]["deadline"] == deadline_ms / 1000.0
    assert 15 < a["data"]["time_left"] <= 20
    assert a["data"]["worker_vars"] == []


def test_cancel_and_deadline_mark_the_request_cancelled(worker):
    w = worker()
    w.handshake("workerkit")
    w.request("c", "workerkit", "wait", {"ms": 60000})
    time.sleep(0.1)
    w.send_line(vector("cancel")["line"].replace('"17"', '"c"'))
    r = w.replies(1)["c"]
    assert r["statuscode"] == 1 and r["statusmsg"] == "cancelled: cancelled by the host (deadline)"
    start = time.time()
    r = w.call("d", "workerkit", "wait", {"ms": 60000}, deadline_in=0.3)
    assert r["statuscode"] == 1 and "deadline exceeded" in r["statusmsg"]
    assert 0.15 < time.time() - start < 1
    # A cancel for a request already answered is ignored.
    w.send({"type": "cancel", "v": 1, "id": "d", "reason": "stop"})
    assert w.call("e", "workerkit", "info")["statuscode"] == 0


def test_exceptions_and_sys_exit_fail_only_their_request(worker):
    w = worker()
    w.handshake("workerkit")
    r = w.call("1", "workerkit", "boom")
    assert r == {"statuscode": 1, "statusmsg": "RPC Aborted: RPC Aborted: the frobnicator jammed", "data": {}}
    r = w.call("2", "workerkit", "leave", {"code": 4})
    assert r["statuscode"] == 1 and "sys.exit(4)" in r["statusmsg"]
    r = w.call("3", "workerkit", "nope")
    assert r == {"statuscode": 1, "statusmsg": "RPC Aborted: RPC Aborted: Unknown RPC Action: nope", "data": {}}
    r = w.call("4", "workerkit", "unencodable")
    assert r["statuscode"] == 1 and "the reply cannot be sent" in r["statusmsg"] and "set" in r["statusmsg"]
    assert w.call("5", "workerkit", "info")["statuscode"] == 0
    assert w.proc.poll() is None


@pytest.mark.parametrize("kind, why", [
    ("nan", "NaN or Infinity"),
    ("infinity", "NaN or Infinity"),
    # The lists start at level 4 of the document (in reply and data): with
    # the innermost {}, 129 of them make 133 levels.
    ("deep129", "it nests deeper than 132 levels"),
    ("deep5000", "it nests deeper than 132 levels"),
    ("iteration", "RuntimeError: cannot iterate"),
])
def test_a_reply_that_cannot_be_sent_fails_only_its_request(worker, kind, why):
    w = worker()
    w.handshake("workerkit")
    r = w.call("1", "workerkit", "unsendable", {"kind": kind})
    assert r["statuscode"] == 1 and r["data"] == {}, r
    assert r["statusmsg"].startswith("RPC Aborted: the reply cannot be sent: ") and why in r["statusmsg"], r
    assert w.call("2", "workerkit", "info")["statuscode"] == 0
    assert w.proc.poll() is None
    # The harness also checks that every line was JSON without NaN, nested
    # at most 132 levels (the fixture fails the test otherwise).


def test_a_deep_reply_within_the_limit_is_sent(worker):
    w = worker()
    w.handshake("workerkit")
    # 128 lists and the innermost {} from level 4: 132 levels.
    r = w.call("1", "workerkit", "unsendable", {"kind": "deep128"})
    assert r["statuscode"] == 0, r


@pytest.mark.parametrize("kind", ["keyboard", "generator"])
def test_base_exceptions_fail_only_their_request(worker, kind):
    w = worker()
    w.handshake("workerkit")
    r = w.call("1", "workerkit", "interrupt", {"kind": kind})
    name = {"keyboard": "KeyboardInterrupt", "generator": "GeneratorExit"}[kind]
    assert r == {"statuscode": 1, "statusmsg": "RPC Aborted: the action raised %s: stop it" % name, "data": {}}
    assert w.call("2", "workerkit", "info")["statuscode"] == 0


def test_far_future_deadlines_and_graces_keep_the_timer(worker):
    w = worker()
    w.handshake("workerkit")
    # Valid integers, far beyond what a timer can wait for (or a float hold).
    far = int((time.time() + 1e10) * 1000)
    assert w.call("1", "workerkit", "info", deadline_ms=far)["statuscode"] == 0
    assert w.call("2", "workerkit", "info", deadline_ms=10 ** 400)["statuscode"] == 0
    # The timer still cancels what comes due.
    r = w.call("3", "workerkit", "wait", {"ms": 60000}, deadline_in=0.3)
    assert r["statuscode"] == 1 and "deadline exceeded" in r["statusmsg"], r
    w.request("4", "workerkit", "wait", {"ms": 60000}, deadline_ms=10 ** 400)
    w.send({"type": "shutdown", "v": 1, "reason": "stop", "grace_ms": 10 ** 400})
    w.send({"type": "cancel", "v": 1, "id": "4", "reason": "stop"})
    r = w.replies(1)["4"]
    assert r["statuscode"] == 1 and "cancelled by the host" in r["statusmsg"], r
    assert w.wait() == 0


def test_an_overridden_dispatch_classmethod_runs(worker):
    # py-mco-agent 0.4's signature: dispatch(cls, request, reply).
    w = worker(WRAPPED)
    w.handshake("wrapped")
    assert w.call("1", "wrapped", "ok") == {"statuscode": 0, "statusmsg": "", "data": {"ok": True, "wrapped": True}}
    assert w.call("2", "wrapped", "context")["data"] == {"has_deadline": True, "wrapped": True}


def test_an_overridden_run_of_0_3_runs(worker):
    w = worker(OLDRUN)
    w.handshake("oldrun")
    assert w.call("1", "oldrun", "ping") == {"statuscode": 0, "statusmsg": "", "data": {"pong": 1, "wrapped": True}}


def _facts_file_checks(w: Worker, agent: str, kind: str) -> None:
    w.handshake(agent)
    a, b = {"os": {"family": "Debian"}, "n": 1}, {"os": {"family": "RedHat"}}
    first = w.call("1", agent, "rawfacts", facts=a)
    assert first["statuscode"] == 0 and first["data"]["facts"] == a, first
    assert w.call("2", agent, "rawfacts", facts=b)["data"]["facts"] == b
    assert w.call("3", agent, "rawfacts", facts=b)["data"]["facts"] == b
    assert w.call("4", agent, "rawfacts", facts={})["data"]["facts"] == {}
    path = w.call("5", agent, "factsfile" if agent == "oldrun" else "rawfacts")["data"]["path"]
    assert os.path.isfile(path)
    # Private to the worker: a directory of its own.
    assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0
    if kind == "shutdown":
        w.send({"type": "shutdown", "v": 1, "reason": "stop", "grace_ms": 1000})
        assert w.wait() == 0
    elif kind == "eof":
        os.close(w.to_worker)
        assert w.wait() == 0
    else:
        w.proc.terminate()
        assert w.wait() == -15
    assert not os.path.exists(os.path.dirname(path))


@pytest.mark.parametrize("kind", ["shutdown", "eof", "sigterm"])
def test_the_facts_file_concurrency_1(worker, kind):
    # The agent reads CHORIA_EXTERNAL_FACTS itself, as py-mco-agent agents do.
    _facts_file_checks(worker(OLDRUN), "oldrun", kind)


def test_the_facts_file_concurrency_3(worker):
    _facts_file_checks(worker(), "workerkit", "shutdown")


def test_stray_output_goes_to_the_log(worker):
    w = worker()
    w.handshake("workerkit")
    assert w.call("n", "workerkit", "noisy")["statuscode"] == 0
    assert w.call("m", "workerkit", "info")["statuscode"] == 0
    w.send({"type": "shutdown", "v": 1, "reason": "stop", "grace_ms": 1000})
    assert w.wait() == 0
    assert [json.loads(line)["type"] for line in w.raw] == ["ready", "reply", "reply"]
    assert "hello from print()\n" in w.stdout and "an info record\n" in w.stdout
    assert w.stdout.endswith("no newline yet")  # flushed at exit
    assert "a warning record\n" in w.stderr


def test_loggers_the_agent_gets_itself_reach_the_log(worker):
    # legacy logs through logging.getLogger("mcorpc.legacy"), never self.logger.
    w = worker(PYCOMPAT / "legacy" / "legacy")
    w.handshake("legacy")
    assert w.call("e", "legacy", "echo", {"message": "hi"})["data"]["message"] == "hi"
    w.send({"type": "shutdown", "v": 1, "reason": "stop", "grace_ms": 1000})
    assert w.wait() == 0
    assert w.stdout == "legacy info\n"


def test_children_inherit_neither_fds_nor_variables(worker):
    w = worker()
    w.handshake("workerkit")
    r = w.call("k", "workerkit", "child")
    assert r["statuscode"] == 0, r
    assert r["data"] == {"fds": [], "env": []}


def test_oversized_reply_fails_only_its_request(worker):
    w = worker()
    w.handshake("workerkit", max_document_bytes=4096)
    r = w.call("big", "workerkit", "big", {"bytes": 10000})
    assert r["statuscode"] == 1 and "too large" in r["statusmsg"] and "4096" in r["statusmsg"]
    assert all(len(line) <= 4097 for line in w.raw)
    assert w.call("ok", "workerkit", "big", {"bytes": 1000})["statuscode"] == 0


def test_oversized_line_ends_the_worker(worker):
    w = worker()
    w.handshake("workerkit", max_document_bytes=4096)
    w.send_line('{"type":"ping","v":1,"id":"' + "x" * 5000 + '"}')
    assert w.wait() == 1
    assert w.next() is None


def test_shutdown_finishes_what_runs(worker):
    w = worker()
    w.handshake("workerkit")
    w.request("s", "workerkit", "stubborn", {"ms": 300})
    time.sleep(0.05)
    w.send({"type": "shutdown", "v": 1, "reason": "recycle", "grace_ms": 5000})
    w.send({"type": "ping", "v": 1, "id": "still"})
    assert w.next() == {"type": "pong", "v": 1, "id": "still"}
    assert w.replies(1)["s"]["statuscode"] == 0
    assert w.wait(2) == 0


def test_shutdown_cancels_then_exits_within_the_grace(worker):
    w = worker()
    w.handshake("workerkit")
    w.request("w", "workerkit", "wait", {"ms": 60000})
    w.request("h", "workerkit", "stubborn", {"ms": 60000})
    time.sleep(0.05)
    start = time.time()
    w.send({"type": "shutdown", "v": 1, "reason": "stop", "grace_ms": 1000})
    r = w.replies(1)
    assert r["w"]["statuscode"] == 1 and "shutting down" in r["w"]["statusmsg"]
    assert w.wait(3) == 0
    assert time.time() - start < 1.5  # the grace, and slack for a busy machine


def test_shutdown_when_idle_exits_at_once(worker):
    w = worker()
    w.handshake("workerkit")
    w.send({"type": "shutdown", "v": 1, "reason": "idle", "grace_ms": 5000})
    assert w.wait(2) == 0


def test_end_of_file_exits_at_once(worker):
    w = worker()
    w.handshake("workerkit")
    w.request("s", "workerkit", "stubborn", {"ms": 10000})
    time.sleep(0.05)
    start = time.time()
    os.close(w.to_worker)
    assert w.wait(2) == 0
    assert time.time() - start < 1
    assert w.next() is None  # the request is not answered


def test_stdin_end_of_file_exits(worker):
    w = worker()
    w.handshake("workerkit")
    os.close(w.stdin_w)
    assert w.wait(2) == 0


def test_exec_mode_activation_offers_the_worker(run):
    r = run(WORKERKIT, activation_request("workerkit"), protocol=ACTIVATION,
            env={"AGENT_HOST_WORKER_PROTOCOLS": "1"})
    assert (r.returncode, r.reply) == (0, {"activate": True, "agent_host_worker": {"versions": [1]}})
    r = run(WORKERKIT, activation_request("workerkit"), protocol=ACTIVATION,
            env={"AGENT_HOST_WORKER_PROTOCOLS": "2,3"})
    assert (r.returncode, r.reply_text) == (0, '{"activate": true}')


def test_pooltest_in_exec_mode(run):
    r = run(POOLTEST, rpc_request("pooltest", "echo", {"message": "hi"}))
    assert r.returncode == 0 and r.reply["data"]["message"] == "hi", r
