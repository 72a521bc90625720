"""Runs agent executables as Choria and agent-host do (the file protocol)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent.parent
AGENTS = TESTS / "agents"
PARROT = REPO / "testdata" / "agents" / "parrot" / "parrot"
PYCOMPAT = REPO / "testdata" / "agents-src" / "pycompat"

SCHEMAS = REPO / "protocol" / "schemas"

RPC = "io.choria.mcorpc.external.v1.rpc_request"
ACTIVATION = "io.choria.mcorpc.external.v1.activation_request"
RPC_REPLY = "io.choria.mcorpc.external.v1.rpc_reply"
ACTIVATION_REPLY = "io.choria.mcorpc.external.v1.activation_reply"


def rpc_request(agent: str, action: str, data: Optional[Dict[str, Any]] = None, **over: Any) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "$schema": "https://choria.io/schemas/mcorpc/external/v1/rpc_request.json",
        "protocol": RPC,
        "agent": agent,
        "action": action,
        "requestid": "3e1c5d0a8b1f5ad2a0c6f1d8e7b4a912",
        "senderid": "client1.example.net",
        "callerid": "choria=rip.mcollective",
        "collective": "mcollective",
        "ttl": 60,
        "msgtime": 1718444508,
        "data": {} if data is None else data,
    }
    doc.update(over)
    return doc


def activation_request(agent: str) -> Dict[str, Any]:
    return {
        "$schema": "https://choria.io/schemas/mcorpc/external/v1/activation_request.json",
        "protocol": ACTIVATION,
        "agent": agent,
    }


_validators: Dict[str, Any] = {}


def schema_errors(name: str, doc: Any) -> List[str]:
    """What is wrong with ``doc`` by the schema ``name`` of protocol/schemas,
    checked by the jsonschema library (the tests' reference validator)."""
    from jsonschema import Draft202012Validator

    v = _validators.get(name)
    if v is None:
        v = _validators[name] = Draft202012Validator(json.loads((SCHEMAS / (name + ".json")).read_text()))
    return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path), e.message) for e in v.iter_errors(doc)]


def check_document(name: str, doc: Any) -> None:
    errors = schema_errors(name, doc)
    assert not errors, "%s is not a valid %s: %s" % (json.dumps(doc), name, errors)


def nesting(text: str) -> int:
    """How deeply JSON text nests arrays and objects, read as protocol/limits.go's
    CheckDepth reads it: one pass, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def strict_json(text: Any) -> Any:
    """``json.loads`` as Go's decoder (Choria's, agent-host's) reads: no NaN or Infinity."""
    def refuse(name: str) -> Any:
        raise ValueError("%s is not JSON" % name)

    return json.loads(text, parse_constant=refuse)


@dataclass
class Result:
    returncode: int
    reply_text: str
    stdout: str
    stderr: str

    @property
    def reply(self) -> Any:
        return json.loads(self.reply_text)


class Runner:
    """Runs one agent executable per call, with Choria's argv, environment and files."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.plugin_d = tmp / "plugin.d"
        self.plugin_d.mkdir()
        self.n = 0

    def __call__(self, executable: Path, doc: Any, protocol: Optional[str] = None,
                 facts: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                 config_name: Optional[str] = None) -> Result:
        self.n += 1
        work = self.tmp / ("call%d" % self.n)
        work.mkdir()
        request, reply, facts_file = work / "request", work / "reply", work / "facts"
        if isinstance(doc, bytes):
            request.write_bytes(doc)
        else:
            request.write_text(doc if isinstance(doc, str) else json.dumps(doc, separators=(",", ":")))
        reply.write_text("")
        facts_file.write_text("" if facts is None else facts)
        if protocol is None:
            protocol = doc.get("protocol", RPC) if isinstance(doc, dict) else RPC
        name = config_name or executable.name
        full_env = {
            "CHORIA_EXTERNAL_REQUEST": str(request),
            "CHORIA_EXTERNAL_REPLY": str(reply),
            "CHORIA_EXTERNAL_PROTOCOL": protocol,
            "CHORIA_EXTERNAL_CONFIG": str(self.plugin_d / name),
            "CHORIA_EXTERNAL_FACTS": str(facts_file),
            # `#!/usr/bin/env python3` finds this virtual environment's interpreter.
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        }
        full_env.update(env or {})
        proc = subprocess.run(
            [str(executable), str(request), str(reply), RPC],
            env=full_env, cwd=str(work), capture_output=True, text=True, timeout=30,
        )
        result = Result(proc.returncode, reply.read_text(), proc.stdout, proc.stderr)
        # Whatever an agent writes as its reply must be what the protocol's
        # published schema says, in every test.
        if result.reply_text and proc.returncode == 0:
            check_document(RPC_REPLY if protocol == RPC else ACTIVATION_REPLY, result.reply)
        return result


@pytest.fixture
def run(tmp_path: Path) -> Runner:
    return Runner(tmp_path)
