"""The same agents under the real py-mco-agent and under this SDK, in exec
mode, replies compared field by field.

The real packages come from PyPI, each release in a virtual environment of
its own, named by environment variables (``make test-python`` creates and
sets them):

* ``PYMCO_04``: py-mco-agent 0.4.0 with py-choria-external 0.2.0 (what pip
  resolves 0.4.0 to);
* ``PYMCO_04_PCE01``: py-mco-agent 0.4.0 with py-choria-external 0.1.0;
* ``PYMCO_03``: py-mco-agent 0.3.3.

Agents in 0.4's import style run under the first two, agents in 0.3's
under the third (0.4 dropped ``from mco_agent import dispatch``; 0.3 has no
``choria_external``). Every difference must be one the SDK's README lists
as a deliberate fix: a case that differs names the README's row, and the
test fails both when an unlisted difference appears and when a listed one
disappears.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from conftest import ACTIVATION, AGENTS, PARROT, PYCOMPAT, REPO, RPC, Result, Runner, activation_request, rpc_request

README = (REPO / "sdk-python" / "README.md").read_text()
KITCHEN = PYCOMPAT / "kitchen" / "kitchen"
LEGACY = PYCOMPAT / "legacy" / "legacy"

# The releases in each environment, checked before anything is compared.
RELEASES = {
    "PYMCO_04": {"mco_agent": "0.4.0", "choria_external": "0.2.0"},
    "PYMCO_04_PCE01": {"mco_agent": "0.4.0", "choria_external": "0.1.0"},
    "PYMCO_03": {"mco_agent": "0.3.3"},
}
V04 = ("PYMCO_04", "PYMCO_04_PCE01")
V03 = ("PYMCO_03",)

# The README rows (their bold titles) that explain a difference.
CONFIG = "Config file location."
REGISTRY = "Shared action registry"
LOGGER = "Logger drops info and debug"
INVALID = "Invalid request"
FACTS = "Facts"
STRAY = "Stray print"
NAN = "NaN and Infinity"


@dataclass
class Case:
    id: str
    agent: str  # "parrot", "kitchen", "legacy", or one in tests/agents
    doc: Any
    envs: Tuple[str, ...]
    protocol: str = RPC
    config: Optional[Tuple[str, str]] = None  # (where under plugin.d, text)
    facts: Optional[str] = None
    logs: bool = False  # compare stdout and stderr too
    # env -> the README row that explains why the replies differ there.
    fixes: Dict[str, str] = field(default_factory=dict)


def config_cases(agent: str, envs: Tuple[str, ...], action: str, text: str,
                 data: Optional[Dict[str, Any]] = None) -> List[Case]:
    """One case per place a configuration file can be: who finds it differs."""
    cases = []
    for where, found_by in (("{0}", ("PYMCO_04",)), ("{0}.cfg", ("PYMCO_04",)),
                            ("{0}/{0}.cfg", ("PYMCO_04_PCE01", "PYMCO_03"))):
        cases.append(Case("%s %s config at plugin.d/%s" % (agent, action, where.format(agent)), agent,
                          rpc_request(agent, action, data) if action != "activation" else activation_request(agent),
                          envs, protocol=RPC if action != "activation" else ACTIVATION,
                          config=(where.format(agent), text),
                          fixes={e: CONFIG for e in envs if e not in found_by}))
    return cases


def cases() -> List[Case]:
    c: List[Case] = []
    # py-mco-agent's README parrot, unchanged.
    c.append(Case("parrot echo", "parrot", rpc_request("parrot", "echo", {"message": "hello"}), V04, logs=True))
    c.append(Case("parrot echo, not ASCII", "parrot", rpc_request("parrot", "echo", {"message": "h\u00e9llo \u2713 \U0001f99c"}), V04))
    c.append(Case("parrot activation", "parrot", activation_request("parrot"), V04, protocol=ACTIVATION))
    c += config_cases("parrot", V04, "echo", "# prefix\nprefix = PFX: \n", {"message": "hi"})
    c.append(Case("parrot, a request without ttl", "parrot",
                  {k: v for k, v in rpc_request("parrot", "echo", {"message": "x"}).items() if k != "ttl"}, V04))
    c.append(Case("parrot, action not a name", "parrot", rpc_request("parrot", "Echo", {"message": "x"}), V04))
    c.append(Case("parrot, an unknown protocol", "parrot", rpc_request("parrot", "echo"), V04, protocol="io.example.nosuch"))
    c.append(Case("parrot, a request that is not UTF-8", "parrot",
                  json.dumps(rpc_request("parrot", "echo", {"message": "\u00e9"}), ensure_ascii=False).encode("latin-1"),
                  V04, protocol=RPC))

    # kitchen: 0.4 imports under 0.4, the same file with 0.3 imports under 0.3.
    both = V04 + V03
    for action in ("invalid", "boom", "keyerror", "baddata", "status", "missing"):
        c.append(Case("kitchen " + action, "kitchen", rpc_request("kitchen", action), both, logs=True))
    c.append(Case("kitchen request", "kitchen", rpc_request("kitchen", "request", {"message": "x", "n": [1, {"a": None}]},
                                                            ttl=30, msgtime=1796153161, senderid="n1", callerid="user=ada",
                                                            collective="eu"), both))
    c.append(Case("kitchen config, no file", "kitchen", rpc_request("kitchen", "config"), both))
    c += config_cases("kitchen", both, "config", "#x=1\n whitespaced_key = value\nother=v with trailing \r\ndup=1\ndup=2\n")
    c += config_cases("kitchen", both, "activation", "activate=false\n")
    c += config_cases("kitchen", both, "request", "activate=false\n")
    c.append(Case("kitchen log", "kitchen", rpc_request("kitchen", "log"), both, logs=True,
                  fixes={e: LOGGER for e in both}))
    c.append(Case("kitchen facts", "kitchen", rpc_request("kitchen", "facts"), both, facts='{"os": {"family": "Debian"}}',
                  fixes={e: FACTS for e in both}))
    c.append(Case("kitchen, a request without data", "kitchen",
                  {k: v for k, v in rpc_request("kitchen", "request").items() if k != "data"}, both,
                  fixes={e: INVALID for e in V03}))

    # legacy: 0.3 imports, a second agent class in the file.
    c.append(Case("legacy echo", "legacy", rpc_request("legacy", "echo", {"message": "hi"}), V03, logs=True,
                  fixes={"PYMCO_03": REGISTRY}))
    c.append(Case("legacy other_only", "legacy", rpc_request("legacy", "other_only"), V03, fixes={"PYMCO_03": REGISTRY}))
    c.append(Case("legacy activation", "legacy", activation_request("legacy"), V03, protocol=ACTIVATION))

    # wrapped: 0.4 imports, Agent.dispatch overridden; oldrun: 0.3 imports, Agent.run overridden.
    facts = '{"os": {"family": "Debian"}, "n": [1, 2]}'
    c.append(Case("wrapped ok", "wrapped", rpc_request("wrapped", "ok"), V04, logs=True))
    c.append(Case("wrapped, a reply with NaN", "wrapped", rpc_request("wrapped", "nan"), V04, fixes={e: NAN for e in V04}))
    c.append(Case("wrapped, a reply with -Infinity", "wrapped", rpc_request("wrapped", "inf"), V04,
                  fixes={e: NAN for e in V04}))
    c.append(Case("wrapped reads the facts file", "wrapped", rpc_request("wrapped", "rawfacts"), V04, facts=facts))
    c.append(Case("oldrun ping", "oldrun", rpc_request("oldrun", "ping"), V03, logs=True))
    c.append(Case("oldrun AgentConfig(agent_name=)", "oldrun", rpc_request("oldrun", "config"), V03))
    c.append(Case("oldrun reads the facts file", "oldrun", rpc_request("oldrun", "rawfacts"), V03, facts=facts))
    c.append(Case("oldrun activation", "oldrun", activation_request("oldrun"), V03, protocol=ACTIVATION))
    return c


CASES = cases()
PARAMS = [pytest.param(case, env, id="%s [%s]" % (case.id, env)) for case in CASES for env in case.envs]


def environment(name: str) -> Path:
    path = os.environ.get(name)
    if not path:
        pytest.skip("%s is not set: run `make test-python`, which creates the real py-mco-agent's environments" % name)
    venv = Path(path)
    for module, version in RELEASES[name].items():
        out = subprocess.run([str(venv / "bin" / "python"), "-c", "import %s; print(%s.__version__)" % (module, module)],
                             capture_output=True, text=True)
        assert out.stdout.strip() == version, "%s: %s %r, want %s: %s" % (name, module, out.stdout, version, out.stderr)
    return venv


def agent_file(agent: str, env: str, tmp: Path) -> Path:
    """The agent's executable; kitchen in 0.3's imports for 0.3."""
    tmp.mkdir(parents=True, exist_ok=True)
    if agent == "parrot":
        return PARROT
    if agent == "legacy":
        return LEGACY
    if agent in ("wrapped", "oldrun"):
        return AGENTS / agent
    if env not in V03:
        return KITCHEN
    text = KITCHEN.read_text()
    for old, new in (("from choria_external.dispatcher import dispatch", "from mco_agent import dispatch"),
                     ("from choria_external.exceptions import InvalidRPCData", "from mco_agent.exceptions import InvalidRPCData")):
        assert old in text
        text = text.replace(old, new)
    path = tmp / "kitchen03" / "kitchen"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def run_in(venv: Path, case: Case, exe: Path, tmp: Path) -> Result:
    run = Runner(tmp)  # tmp exists: agent_file made it
    if case.config:
        where, text = case.config
        path = run.plugin_d / where
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # `#!/usr/bin/env python3` finds the environment's interpreter first.
    return run(exe, case.doc, protocol=case.protocol, facts=case.facts, config_name=case.agent,
               env={"PATH": str(venv / "bin") + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")})


def fields(r: Result, logs: bool, real: bool) -> Dict[str, Any]:
    """What is compared: the exit status, then the reply document key by key
    (and its bytes), and the log lines when the case asks."""
    got: Dict[str, Any] = {"exit status": r.returncode, "reply bytes": r.reply_text}
    if r.reply_text:
        reply = r.reply
        for key in sorted(set(reply) | {"statuscode", "statusmsg", "data"} if "activate" not in reply else set(reply)):
            got["reply." + key] = reply.get(key, "<missing>")
        for key, value in sorted((reply.get("data") or {}).items()):
            got["reply.data." + key] = value
    if logs:
        stdout = r.stdout.splitlines()
        if real:
            # py-choria-external prints its schemas directory on every run
            # (the "Stray print" row): not compared, but it must be there.
            stray = [line for line in stdout if line.endswith(os.path.join("mco_agent", "schemas"))]
            stdout = [line for line in stdout if line not in stray]
            got["stray print"] = bool(stray)
        got["stdout"] = stdout
        got["stderr"] = r.stderr.splitlines() if r.returncode == 0 else "<a failure>"
    return got


@pytest.mark.parametrize("case, env", PARAMS)
def test_replies_match_the_real_py_mco_agent(case: Case, env: str, tmp_path: Path) -> None:
    venv = environment(env)
    real = fields(run_in(venv, case, agent_file(case.agent, env, tmp_path / "real"), tmp_path / "real"), case.logs, True)
    ours = fields(run_in(Path(sys.prefix), case, agent_file(case.agent, env, tmp_path / "sdk"),
                         tmp_path / "sdk"), case.logs, False)
    if case.logs:
        # py-choria-external (0.1 and 0.2) prints it; py-mco-agent 0.3 did not.
        assert real.pop("stray print") == (env in V04), "the stray print is not where the README says"
    differences = ["%s: py-mco-agent %r, sdk %r" % (k, real.get(k, "<missing>"), ours.get(k, "<missing>"))
                   for k in sorted(set(real) | set(ours)) if real.get(k, "<missing>") != ours.get(k, "<missing>")]
    fix = case.fixes.get(env)
    if fix is None:
        assert not differences, "differences the README does not list:\n" + "\n".join(differences)
    else:
        assert differences, "the replies no longer differ: the README row %r and this case need updating" % fix
        assert re.search(r"^\| \*\*%s" % re.escape(fix), README, re.M), "the README has no row %r" % fix


def test_every_listed_fix_is_exercised() -> None:
    used = {fix for case in CASES for fix in case.fixes.values()}
    assert used == {CONFIG, REGISTRY, LOGGER, INVALID, FACTS, NAN}
    assert re.search(r"^\| \*\*%s" % re.escape(STRAY), README, re.M)
