"""The local runner (``python -m agent_host run``) and the example agent, filecheck."""

from __future__ import annotations

import getpass
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List

import pytest

from agent_host import cli
from conftest import ACTIVATION, AGENTS, PARROT, REPO, RPC
from test_worker import Worker

CLITEST = AGENTS / "clitest"
NODEINFO = REPO / "testdata" / "agents" / "nodeinfo" / "nodeinfo"
FILECHECK = REPO / "sdk-python" / "examples" / "filecheck" / "filecheck"
PROG = "python -m agent_host run"


def command(*args: Any, module: str = "agent_host") -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """``python -m <module> run ARGS``."""
    return subprocess.run([sys.executable, "-m", module, "run", *(str(a) for a in args)],
                          capture_output=True, text=True, timeout=60)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def runner(capsys):
    """``run ARGS`` in this process (the agents in subprocesses): quicker than ``command``."""

    def run(*args: Any) -> Ran:
        capsys.readouterr()
        code = cli.main(["run", *(str(a) for a in args)], prog="python -m agent_host")
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def pretty(reply: Any) -> str:
    return json.dumps(reply, indent=2) + "\n"


def dead(pid: int, within: float = 5) -> bool:
    """Whether the process is gone (or a zombie nobody reaps) within the time."""
    end = time.time() + within
    while time.time() < end:
        try:
            os.kill(pid, 0)
            with open("/proc/%d/stat" % pid) as fp:
                if fp.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.02)
    return False


# -- the runner, through the file protocol ------------------------------------


def test_parrot_json_and_pretty():
    p = command(PARROT, "echo", "message=hello world", "--json")
    assert (p.returncode, p.stdout) == (0, '{"statuscode": 0, "statusmsg": "", "data": {"message": "hello world"}}\n')
    # The agent's stderr, as a host logs it.
    assert p.stderr == "[parrot#echo stderr] Using default prefix!\n"
    p = command(PARROT, "echo", "message=hi", module="mco_agent")
    assert (p.returncode, p.stdout) == (0, pretty({"statuscode": 0, "statusmsg": "", "data": {"message": "hi"}}))


def test_parrot_config(runner, tmp_path):
    cfg = tmp_path / "parrot.cfg"
    cfg.write_text("prefix = PFX: \n")
    p = runner("--config", cfg, PARROT, "echo", "message=hi")
    assert (p.returncode, p.stderr) == (0, "")
    assert json.loads(p.stdout) == {"statuscode": 0, "statusmsg": "", "data": {"message": "PFX: hi"}}


def test_console_script():
    script = Path(sys.executable).parent / "agent-host-python"
    if not script.exists():
        pytest.skip("the SDK is not installed with its scripts")
    p = subprocess.run([str(script), "run", PARROT, "echo", "message=x", "--json"], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout) == (0, '{"statuscode": 0, "statusmsg": "", "data": {"message": "x"}}\n')


def test_shell_agent_with_facts(runner, tmp_path):
    p = runner(NODEINFO, "uptime", "--json")
    assert p.returncode == 0, p.stderr
    reply = json.loads(p.stdout)
    assert reply["statuscode"] == 0 and sorted(reply["data"]) == ["kernel", "uptime"]
    assert isinstance(reply["data"]["uptime"], int) and reply["data"]["kernel"] == " ".join(os.uname()[i] for i in (0, 2))
    facts = tmp_path / "facts.json"
    facts.write_text('{"os": {"family": "linux"}, "n": 2}')
    p = runner(NODEINFO, "facts", "--facts", facts)
    assert (p.returncode, p.stderr) == (0, "")
    assert p.stdout == pretty({"statuscode": 0, "statusmsg": "OK", "data": {"facts": {"os": {"family": "linux"}, "n": 2}}})


def test_request_environment_and_argv(runner, tmp_path):
    cfg, record = tmp_path / "clitest.cfg", tmp_path / "activation.json"
    cfg.write_text("colour = blue\nrecord_activation = %s\n" % record)
    facts = tmp_path / "facts.json"
    facts.write_text('{"role": "web"}')
    before = time.time()
    p = runner(CLITEST, "inspect", "--config", cfg, "--facts", facts, "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)["data"]

    request = data["request"]
    assert re.fullmatch(r"[0-9a-f]{32}", request.pop("requestid"))
    assert before - 1 <= request.pop("msgtime") <= time.time() + 1
    assert request == {
        "$schema": "https://choria.io/schemas/mcorpc/external/v1/rpc_request.json",
        "protocol": RPC, "agent": "clitest", "action": "inspect", "senderid": socket.gethostname(),
        "callerid": "user=" + getpass.getuser(), "collective": "mcollective", "ttl": 60, "data": {}}
    env = data["env"]
    work = data["cwd"]
    assert env == {
        "CHORIA_EXTERNAL_REQUEST": os.path.join(work, "request"),
        "CHORIA_EXTERNAL_REPLY": os.path.join(work, "reply"),
        "CHORIA_EXTERNAL_PROTOCOL": RPC,
        "CHORIA_EXTERNAL_CONFIG": os.path.join(work, "etc", "plugin.d", "clitest"),
        "CHORIA_EXTERNAL_FACTS": os.path.join(work, "facts"),
        "PATH": os.environ["PATH"],
    }
    assert data["argv"] == [str(CLITEST), env["CHORIA_EXTERNAL_REQUEST"], env["CHORIA_EXTERNAL_REPLY"], RPC]
    assert data["executable"] == sys.executable
    assert (data["facts_file"], data["facts"]) == ('{"role":"web"}', {"role": "web"})
    assert data["config"] == {"colour": "blue", "record_activation": str(record)}
    assert not os.path.exists(work)  # removed afterwards

    # The activation check ran first, with an empty facts file.
    act = json.loads(record.read_text())
    assert act["request"] == {"$schema": "https://choria.io/schemas/mcorpc/external/v1/activation_request.json",
                              "protocol": ACTIVATION, "agent": "clitest"}
    assert act["facts_file"] == ""
    assert act["env"]["CHORIA_EXTERNAL_PROTOCOL"] == ACTIVATION
    assert act["argv"][3] == RPC  # as Choria: the RPC protocol even for the activation check
    assert sorted(act["env"]) == sorted(env)


def test_types_from_the_ddl(runner):
    p = runner(CLITEST, "echo", "s=123", "i=-42", "f=1.5", "n=2", "b=yes", 'h={"a": [1]}', 'a=[1, "x"]', "l=y",
               "safe=a b", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["data"] == {
        "s": "123", "i": -42, "f": 1.5, "n": 2.0, "b": True, "h": {"a": [1]}, "a": [1, "x"], "l": "y",
        "safe": "a b", "d": "dflt", "count": 3}
    # A value given wins over the default; keys are lower-cased as Choria does.
    p = runner(CLITEST, "echo", "COUNT=7", "d=mine", "--json")
    assert json.loads(p.stdout)["data"] == {"count": 7, "d": "mine"}


def test_without_a_ddl_values_are_typed_by_how_they_look(runner, tmp_path):
    agent = tmp_path / "clitest"
    shutil.copy(CLITEST, agent)
    p = runner(agent, "echo", "n=-3", "b=true", 'h={"a": [1]}', "a=[1]", "s=hello", "v=1.10", "z=007", "x=null",
               "y=yes", "j={nope", "e=", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["data"] == {"n": -3, "b": True, "h": {"a": [1]}, "a": [1], "s": "hello", "v": "1.10",
                                            "z": "007", "x": "null", "y": "yes", "j": "{nope", "e": ""}
    # --ddl names one elsewhere.
    p = runner(agent, "echo", "s=3", "--ddl", AGENTS / "clitest.json", "--json")
    assert json.loads(p.stdout)["data"] == {"s": "3", "d": "dflt", "count": 3}
    p = runner(agent, "echo", "zz=3", "--ddl", AGENTS / "clitest.json")
    assert (p.returncode, p.stderr) == (2, PROG + ": input 'zz' has not been declared "
                                        "(the inputs of 'echo': a, b, count, d, f, h, i, l, n, s, safe)\n")


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "action 'nosuch' is not declared in the DDL of agent 'clitest' (its actions: crash, echo, fail, garbage, hang, inspect, leave, need, noreply)"),
    (["echo", "bogus=1"], "input 'bogus' has not been declared (the inputs of 'echo': a, b, count, d, f, h, i, l, n, s, safe)"),
    (["need"], "input 'must' is required"),
    (["echo", "i=1.5"], "invalid value for 'i': '1.5' is not a valid integer"),
    (["echo", "f=fast"], "invalid value for 'f': 'fast' is not a valid float"),
    (["echo", "b=maybe"], "invalid value for 'b': 'maybe' is not a valid boolean"),
    (["echo", "h=[1]"], "invalid value for 'h': '[1]' is not a valid JSON string with a hash inside"),
    (["echo", "a={}"], "invalid value for 'a': '{}' is not a valid JSON string with an array inside"),
    (["echo", "l=z"], "invalid value for 'l': should be one of x, y"),
    (["echo", "safe=a;b"], "invalid value for 'safe': may not contain ';'"),
    (["echo", "safe=" + "x" * 21], "invalid value for 'safe': is longer than 20 characters"),
    (["echo", "oops"], "'oops' is not key=value"),
    (["Echo"], "'Echo' is not an action name (lower-case letters, digits and _)"),
])
def test_ddl_refusals_before_the_agent_runs(tmp_path, capsys, args, message):
    record = tmp_path / "activation.json"
    cfg = tmp_path / "clitest.cfg"
    cfg.write_text("record_activation = %s\n" % record)
    code = cli.main(["run", str(CLITEST), *args, "--config", str(cfg)], prog="python -m agent_host")
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", "%s: %s\n" % (PROG, message))
    assert not record.exists()


def test_usage_errors(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "nosuch"), "echo"], prog="x") == 2
    assert capsys.readouterr().err == "x run: %s: no such agent file\n" % (tmp_path / "nosuch")
    facts = tmp_path / "facts.json"
    facts.write_text("[1]")
    assert cli.main(["run", str(PARROT), "echo", "message=m", "--facts", str(facts)], prog="x") == 2
    assert capsys.readouterr().err == "x run: the facts %s are not a JSON object\n" % facts
    assert cli.main(["run", str(PARROT), "echo", "message=m", "--config", str(tmp_path / "none")], prog="x") == 2
    assert capsys.readouterr().err == "x run: %s: no such configuration file\n" % (tmp_path / "none")
    assert cli.main(["frobnicate"], prog="x") == 2
    assert capsys.readouterr().err == "x: unknown command 'frobnicate' (try: run)\n"
    with pytest.raises(SystemExit) as e:
        cli.main(["run", str(PARROT)], prog="x")  # no action
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith("x run: error: the following arguments are required: ACTION\n")
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    assert cli.main(["run", str(plain), "echo"], prog="x") == 2
    assert capsys.readouterr().err == "x run: %s is not executable (chmod +x, as Choria needs it)\n" % plain


def test_agent_failure_exit_1(runner):
    p = runner(CLITEST, "fail")
    assert p.returncode == 1
    assert p.stdout == pretty({"statuscode": 4, "statusmsg": "no good", "data": {"partial": True}})
    assert p.stderr == "[clitest#fail stdout] about to fail\n"


def test_crash_exit_3(runner):
    p = runner(CLITEST, "crash")
    assert (p.returncode, p.stdout) == (3, "")
    assert p.stderr == ("[clitest#crash stderr] crashing\n"
                        "%s: clitest#crash failed: the agent exited with status 3 (Choria ignores its reply then)\n" % PROG)


@pytest.mark.parametrize("text, why", [
    (None, "the agent wrote no reply"),
    ("not json", "the reply is not JSON: Expecting value: line 1 column 1 (char 0)"),
    ("[]", "the reply is not a JSON object"),
    ('{"statuscode": "0", "data": {}}', "the reply's statuscode is not an integer from 0 to 255"),
    ('{"statuscode": 0, "statusmsg": 1, "data": {}}', "the reply's statusmsg is not a string"),
    ('{"statuscode": 0}', "the reply's data is not a JSON object (or null)"),
])
def test_no_valid_reply_exit_3(runner, text, why):
    p = runner(CLITEST, "noreply") if text is None else runner(CLITEST, "garbage", "text=" + text)
    action = "noreply" if text is None else "garbage"
    assert (p.returncode, p.stdout, p.stderr) == (3, "", "%s: clitest#%s failed: %s\n" % (PROG, action, why))


def test_declined_activation_exit_3(runner, tmp_path):
    cfg = tmp_path / "clitest.cfg"
    cfg.write_text("activate = false\n")
    p = runner(CLITEST, "echo", "--config", cfg)
    assert (p.returncode, p.stdout) == (3, "")
    assert p.stderr == '%s: clitest did not activate: its activation check answered {"activate": false}\n' % PROG


def test_timeout_kills_the_process_group(runner, tmp_path):
    pidfile = tmp_path / "child.pid"
    start = time.time()
    p = runner(CLITEST, "hang", "pidfile=%s" % pidfile, "--timeout", "0.5")
    assert time.time() - start < 5
    assert (p.returncode, p.stdout) == (3, "")
    assert p.stderr == "%s: clitest#hang timed out after 0.5 s: its process group was killed\n" % PROG
    assert dead(int(pidfile.read_text()))  # the agent's child too


def test_leftover_processes_are_killed(runner, tmp_path):
    pidfile = tmp_path / "child.pid"
    p = runner(CLITEST, "leave", "pidfile=%s" % pidfile, "--json")
    assert (p.returncode, p.stdout) == (0, '{"statuscode": 0, "statusmsg": "", "data": {}}\n')
    assert p.stderr == "[clitest#leave] the agent left processes behind in its process group: killed\n"
    assert dead(int(pidfile.read_text()))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_stops_the_agent_and_cleans_up(tmp_path, sig):
    pidfile, tmp = tmp_path / "child.pid", tmp_path / "tmp"
    tmp.mkdir()
    runner = subprocess.Popen([sys.executable, "-m", "agent_host", "run", str(CLITEST), "hang", "pidfile=%s" % pidfile,
                               "--timeout", "60"], env=dict(os.environ, TMPDIR=str(tmp)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.time() + 20
        while not (pidfile.exists() and pidfile.read_text()):
            assert time.time() < end and runner.poll() is None, runner.communicate()
            time.sleep(0.02)
        child = int(pidfile.read_text())
        group = os.getpgid(child)  # the agent's process group, the agent leading it
        assert [p.name for p in tmp.iterdir()] != []
        runner.send_signal(sig)
        out, err = runner.communicate(timeout=20)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert dead(child) and dead(group)
    assert list(tmp.iterdir()) == []  # the runner's temporary directory is gone


def test_values_and_facts_that_cannot_be_sent_exit_2(tmp_path, capsys):
    deep = "[" * 127 + "]" * 127
    facts = tmp_path / "facts.json"
    facts.write_text("[" * 5000 + "]" * 5000)
    for args, message in [
        (["echo", "i=" + "9" * 5000], "invalid value for 'i': '%s' is not a valid integer" % ("9" * 5000)),
        (["echo", "i=9223372036854775808"], "invalid value for 'i': '9223372036854775808' is not a valid integer"),
        (["echo", "h={\"a\": %s}" % ("[" * 100000)], "invalid value for 'h': it nests more than 126 levels deep"),
        (["echo", "a=" + deep], "invalid value for 'a': it nests more than 126 levels deep"),
        (["echo", "a=[1e999]"], "invalid value for 'a': '[1e999]' is not a valid JSON string with an array inside"),
        (["echo", "a=[NaN]"], "invalid value for 'a': '[NaN]' is not a valid JSON string with an array inside"),
        (["echo", "--facts", str(facts)], "the facts %s nest more than 128 levels deep" % facts),
    ]:
        code = cli.main(["run", str(CLITEST), *args], prog="python -m agent_host")
        out, err = capsys.readouterr()
        assert (code, out, err[-300:]) == (2, "", ("%s: %s\n" % (PROG, message))[-300:])
    # Without a DDL, as agent-host req: numbers beyond 64 bits and what is
    # not JSON are text; JSON nested too deeply is refused.
    agent = tmp_path / "clitest"
    shutil.copy(CLITEST, agent)
    code = cli.main(["run", str(agent), "echo", "n=" + "9" * 5000, "f=[1e999]", "--json"], prog="python -m agent_host")
    out, err = capsys.readouterr()
    assert (code, json.loads(out)["data"]) == (0, {"n": "9" * 5000, "f": "[1e999]"}), err
    for value in (deep, "[" * 100000):
        code = cli.main(["run", str(agent), "echo", "a=" + value], prog="python -m agent_host")
        out, err = capsys.readouterr()
        assert (code, out, err) == (2, "", "%s: invalid value for 'a': it nests more than 126 levels deep\n" % PROG)
    # 126 levels are sent.
    code = cli.main(["run", str(agent), "echo", "a=" + "[" * 126 + "]" * 126, "--json"], prog="python -m agent_host")
    out, err = capsys.readouterr()
    assert code == 0, err


@pytest.mark.parametrize("text, why", [
    ('{"statuscode": 0, "statusmsg": "", "data": {"x": NaN}}', "the reply is not valid JSON for Choria: NaN"),
    ('{"statuscode": 0, "statusmsg": "", "data": {"x": [-Infinity]}}', "the reply is not valid JSON for Choria: -Infinity"),
    ('{"statuscode": 0, "statusmsg": "", "data": {"x": %s}}' % ("[" * 200 + "]" * 200),
     "the reply nests more than 128 levels deep (agent-host refuses it)"),
    ('{"statuscode": 0, "statusmsg": "", "data": {"x": %s}}' % ("[" * 5000 + "]" * 5000),
     "the reply nests more than 128 levels deep (agent-host refuses it)"),
])
def test_a_reply_choria_cannot_read_exit_3(runner, text, why):
    p = runner(CLITEST, "garbage", "text=" + text)
    assert (p.returncode, p.stdout, p.stderr) == (3, "", "%s: clitest#garbage failed: %s\n" % (PROG, why))


# -- the runner's parts, in process -------------------------------------------


@pytest.mark.parametrize("raw, want", [(v, True) for v in ("true", "TRUE", "yes", "Y", "t", "1")]
                         + [(v, False) for v in ("false", "False", "no", "n", "F", "0")])
def test_booleans(raw, want):
    assert cli.convert("boolean", raw) is want


@pytest.mark.parametrize("raw, want", [("0", 0), ("12", 12), ("-12", -12), ("+5", 5), ("-0", "-0"), ("012", "012"),
                                       ("1.5", "1.5"), ("1e3", "1e3"), ("9" * 19, "9" * 19), ("True", "True"),
                                       ("false", False), ("[1, {}]", [1, {}]), ("[NaN]", "[NaN]"), ("", "")])
def test_guess_without_a_ddl(raw, want):
    assert cli.guess(raw) == want and type(cli.guess(raw)) is type(want)


@pytest.mark.parametrize("typ, raw", [("integer", "1e3"), ("integer", " 1"), ("integer", "1_000"), ("float", "nan"),
                                      ("float", "inf"), ("number", "1_0"), ("float", "1.5 "), ("integer", "5\n"), ("boolean", ""), ("hash", "null"), ("other", "x")])
def test_conversions_refused(typ, raw):
    with pytest.raises(ValueError):
        cli.convert(typ, raw)


def test_locate_layouts(tmp_path):
    # <name>/<name>-<os>_<arch> beside <name>.json, Choria's per-platform layout.
    (tmp_path / "clock" / "clock").mkdir(parents=True)
    exe = tmp_path / "clock" / "clock" / "clock-linux_amd64"
    exe.write_text("")
    (tmp_path / "clock" / "clock.json").write_text("{}")
    assert cli.locate(str(exe), None, None) == (str(exe), "clock", str(tmp_path / "clock" / "clock.json"))
    # A directory is <dir>/<dir>.
    assert cli.locate(str(FILECHECK.parent), None, None) == (
        str(FILECHECK), "filecheck", str(FILECHECK.parent / "filecheck.json"))
    assert cli.locate(str(PARROT), "other", None) == (str(PARROT), "other", None)
    with pytest.raises(cli.UsageError):
        cli.locate(str(exe), "Bad-Name", None)
    assert cli.ddl_timeout({"metadata": {"timeout": 20}}) == 20.0
    assert cli.ddl_timeout({"metadata": {}}) == cli.ddl_timeout(None) == 10.0


# -- the example agent, filecheck ---------------------------------------------


@pytest.fixture
def files(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "secret").write_text("not for you\n")
    (allowed / "escape").symlink_to(tmp_path / "secret")
    data = allowed / "data.bin"
    data.write_bytes(bytes(range(256)) * 10000)  # 2.4 MiB: three chunks
    data.chmod(0o640)
    cfg = tmp_path / "filecheck.cfg"
    cfg.write_text("allowed_paths = /nonexistent : %s\n" % allowed)
    return allowed, data, cfg


def test_filecheck_stat(runner, files):
    allowed, data, cfg = files
    st = data.stat()
    p = runner(FILECHECK, "stat", "path=%s" % data, "--config", cfg, "--json")
    assert (p.returncode, p.stderr) == (0, "")
    assert json.loads(p.stdout) == {"statuscode": 0, "statusmsg": "", "data": {
        "path": str(data), "type": "file", "size": 2560000, "mode": "0640",
        "owner": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(st.st_gid).gr_name, "mtime": int(st.st_mtime)}}
    # The link itself, with follow=false (a boolean input).
    p = runner(FILECHECK, "stat", "path=%s" % (allowed / "escape"), "follow=false", "--config", cfg, "--json")
    assert json.loads(p.stdout)["data"]["type"] == "symlink"


@pytest.mark.parametrize("algorithm", [None, "sha256", "sha1", "md5"])
def test_filecheck_checksum(runner, files, algorithm):
    _, data, cfg = files
    args = ["algorithm=" + algorithm] if algorithm else []
    p = runner(FILECHECK, "checksum", "path=%s" % data, *args, "--config", cfg, "--json")
    name = algorithm or "sha256"
    assert (p.returncode, p.stderr) == (0, "")
    assert json.loads(p.stdout)["data"] == {"path": str(data), "algorithm": name, "size": 2560000,
                                            "digest": hashlib.new(name, data.read_bytes()).hexdigest()}


def test_filecheck_refusals(runner, files, tmp_path):
    allowed, data, cfg = files
    # A symlink out of the allowed directory is refused (InvalidRPCData, 4).
    escape = allowed / "escape"
    p = runner(FILECHECK, "checksum", "path=%s" % escape, "--config", cfg)
    assert p.returncode == 1
    assert p.stdout == pretty({"statuscode": 4, "statusmsg": "%s is not in a directory filecheck may read (allowed_paths)"
                               % escape, "data": {}})
    assert p.stderr == "[filecheck#checksum stderr] refused %s: not in allowed_paths\n" % escape
    # Without configuration nothing is allowed.
    p = runner(FILECHECK, "stat", "path=%s" % data, "--json")
    assert (p.returncode, json.loads(p.stdout)["statuscode"]) == (1, 4)
    p = runner(FILECHECK, "checksum", "path=%s" % allowed, "--config", cfg, "--json")
    assert json.loads(p.stdout) == {"statuscode": 4, "statusmsg": "%s is not a regular file" % allowed, "data": {}}
    p = runner(FILECHECK, "checksum", "path=%s" % (allowed / "nosuch"), "--config", cfg, "--json")
    assert json.loads(p.stdout) == {"statuscode": 1, "statusmsg": "cannot read %s: No such file or directory"
                                    % (allowed / "nosuch"), "data": {}}
    # The DDL: absolute paths and the three algorithms only.
    p = runner(FILECHECK, "checksum", "path=relative", "--config", cfg)
    assert (p.returncode, p.stderr) == (2, "%s: invalid value for 'path': input does not match '^/'\n" % PROG)
    p = runner(FILECHECK, "checksum", "path=/x", "algorithm=sha512")
    assert (p.returncode, p.stderr) == (2, "%s: invalid value for 'algorithm': should be one of sha256, sha1, md5\n" % PROG)


@pytest.fixture
def pool(tmp_path):
    started: List[Worker] = []

    def start(config: str) -> Worker:
        (tmp_path / "plugin.d").mkdir(exist_ok=True)
        (tmp_path / "plugin.d" / "filecheck").write_text(config)
        w = Worker(tmp_path, FILECHECK)
        started.append(w)
        assert w.handshake("filecheck") == {"type": "ready", "v": 1, "sdk": "agent-host-python/0.1.0",
                                            "agents": ["filecheck"], "concurrency": 4, "activate": True}
        return w

    yield start
    for w in started:
        w.close()


def test_filecheck_pool_mode(pool, files):
    allowed, data, cfg = files
    w = pool(cfg.read_text())
    for i, name in enumerate(("sha256", "md5", "sha1")):
        w.request(str(i), "filecheck", "checksum", {"path": str(data), "algorithm": name})
    replies = w.replies(3)
    for i, name in enumerate(("sha256", "md5", "sha1")):
        assert replies[str(i)] == {"statuscode": 0, "statusmsg": "", "data": {
            "path": str(data), "algorithm": name, "size": 2560000, "digest": hashlib.new(name, data.read_bytes()).hexdigest()}}
    reply = w.call("s", "filecheck", "stat", {"path": str(data), "follow": True})
    assert reply["statuscode"] == 0 and reply["data"]["mode"] == "0640"
    reply = w.call("r", "filecheck", "stat", {"path": "/etc/passwd"})
    assert reply == {"statuscode": 4, "statusmsg": "/etc/passwd is not in a directory filecheck may read (allowed_paths)", "data": {}}
    assert w.wait_stderr("refused /etc/passwd: not in allowed_paths\n")
    # Past its deadline the checksum does not start.
    reply = w.call("late", "filecheck", "checksum", {"path": str(data)}, deadline_in=-1)
    assert reply == {"statuscode": 1, "statusmsg": "checksum of %s stopped after 0 bytes: past the deadline" % data, "data": {}}


def test_filecheck_pool_mode_cancel(pool, files):
    allowed, _, cfg = files
    big = allowed / "big.sparse"
    with open(big, "wb") as fp:
        fp.truncate(64 << 30)  # 64 GiB of holes: minutes of hashing
    w = pool(cfg.read_text())
    w.request("big", "filecheck", "checksum", {"path": str(big)})
    time.sleep(0.3)
    start = time.time()
    w.send({"type": "cancel", "v": 1, "id": "big", "reason": "test"})
    reply = w.replies(1)["big"]
    assert time.time() - start < 2
    m = re.fullmatch(r"checksum of (.*) stopped after (\d+) bytes: cancelled by the host \(test\)", reply["statusmsg"])
    assert m and m.group(1) == str(big) and int(m.group(2)) > 0 and int(m.group(2)) % (1 << 20) == 0, reply
    assert (reply["statuscode"], reply["data"]) == (1, {})
    # The worker goes on.
    assert w.call("after", "filecheck", "stat", {"path": str(big)})["data"]["size"] == 64 << 30
