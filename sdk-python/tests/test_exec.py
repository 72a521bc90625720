"""Agents run in subprocesses through the file protocol; replies checked field by field."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import ACTIVATION, AGENTS, PARROT, PYCOMPAT, RPC, activation_request, rpc_request, strict_json

KITCHEN = PYCOMPAT / "kitchen" / "kitchen"
LEGACY = PYCOMPAT / "legacy" / "legacy"
NATIVE = AGENTS / "native"
WRAPPED = AGENTS / "wrapped"
OLDRUN = AGENTS / "oldrun"


def test_agents_are_executable_python3_scripts():
    for path in (PARROT, KITCHEN, LEGACY, NATIVE, WRAPPED, OLDRUN):
        assert path.stat().st_mode & stat.S_IXUSR, path
        assert path.read_text().splitlines()[0] == "#!/usr/bin/env python3", path


def test_parrot_echo(run):
    r = run(PARROT, rpc_request("parrot", "echo", {"message": "hello world", "process_results": True}))
    assert r.returncode == 0
    # py-mco-agent's exact bytes: key order, default separators, empty statusmsg.
    assert r.reply_text == '{"statuscode": 0, "statusmsg": "", "data": {"message": "hello world"}}'
    assert r.stdout == ""
    assert r.stderr == "Using default prefix!\n"


@pytest.mark.parametrize("where", ["parrot", "parrot.cfg", "parrot/parrot.cfg"])
def test_parrot_reads_its_config(run, where):
    path = run.plugin_d / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# a comment\nno equals sign here\n  prefix = PFX: \n")
    r = run(PARROT, rpc_request("parrot", "echo", {"message": "hi"}))
    assert r.returncode == 0
    assert r.reply == {"statuscode": 0, "statusmsg": "", "data": {"message": "PFX: hi"}}
    assert r.stderr == ""


def test_config_file_precedence(run):
    (run.plugin_d / "kitchen").write_text("a=exact\n")
    (run.plugin_d / "kitchen.cfg").write_text("a=cfg\n")
    r = run(KITCHEN, rpc_request("kitchen", "config"))
    assert r.reply["data"] == {"config": {"a": "exact"}, "file": "kitchen"}
    (run.plugin_d / "kitchen").unlink()
    r = run(KITCHEN, rpc_request("kitchen", "config"))
    assert r.reply["data"] == {"config": {"a": "cfg"}, "file": "kitchen.cfg"}


def test_config_parsing(run):
    (run.plugin_d / "kitchen").write_text(
        "#x=1\n whitespaced_key = value\nother_key=value with trailing whitespace \r\n"
        "plugin.kitchen.dotted=1\ndup=first\ndup=second\nempty=\n")
    r = run(KITCHEN, rpc_request("kitchen", "config"))
    assert r.reply["data"]["config"] == {
        "whitespaced_key": "value",
        "other_key": "value with trailing whitespace ",
        "plugin.kitchen.dotted": "1",
        "dup": "second",
        "empty": "",
    }


def test_request_fields(run):
    doc = rpc_request("kitchen", "request", {"n": 1, "nested": {"a": [1, 2]}}, extra_key="ignored")
    r = run(KITCHEN, doc)
    assert r.returncode == 0
    want = {k: v for k, v in doc.items() if k not in ("$schema", "extra_key")}
    assert r.reply == {"statuscode": 0, "statusmsg": "", "data": want}


def test_activation(run):
    r = run(PARROT, activation_request("parrot"), protocol=ACTIVATION)
    assert (r.returncode, r.reply_text) == (0, '{"activate": true}')


def test_activation_offers_a_worker_to_agent_host(run):
    r = run(PARROT, activation_request("parrot"), protocol=ACTIVATION,
            env={"AGENT_HOST_WORKER_PROTOCOLS": "1"})
    assert (r.returncode, r.reply_text) == (0, '{"activate": true, "agent_host_worker": {"versions": [1]}}')


def test_activation_declined_and_inactive_agent(run):
    (run.plugin_d / "kitchen").write_text("activate=false\n")
    r = run(KITCHEN, activation_request("kitchen"), protocol=ACTIVATION)
    assert (r.returncode, r.reply_text) == (0, '{"activate": false}')
    r = run(KITCHEN, rpc_request("kitchen", "request"))
    assert r.returncode == 0
    assert r.reply == {"statuscode": 5, "statusmsg": "Agent is not activated: Agent is not activated: ", "data": {}}


def test_reply_fail_keeps_running(run):
    r = run(KITCHEN, rpc_request("kitchen", "invalid"))
    assert r.returncode == 0
    assert r.reply == {"statuscode": 1, "statusmsg": "Invalid command", "data": {"after": "still ran"}}
    assert r.stderr == "about to fail\n"


@pytest.mark.parametrize("action, msg", [
    ("boom", "RPC Aborted: RPC Aborted: kaboom"),
    ("keyerror", "RPC Aborted: RPC Aborted: 'nosuch'"),
    ("baddata", "RPC Aborted: RPC Aborted: Invalid Data: number is not a number"),
    ("nosuch", "RPC Aborted: RPC Aborted: Unknown RPC Action: nosuch"),
    ("not_an_action", "RPC Aborted: RPC Aborted: Unknown RPC Action: not_an_action"),
])
def test_failures_as_py_mco_agent_words_them(run, action, msg):
    r = run(KITCHEN, rpc_request("kitchen", action))
    assert r.returncode == 0
    assert r.reply == {"statuscode": 1, "statusmsg": msg, "data": {}}


def test_status_set_by_hand(run):
    r = run(KITCHEN, rpc_request("kitchen", "status"))
    assert r.reply == {"statuscode": 3, "statusmsg": "set by hand", "data": {}}


def test_logging_levels(run):
    r = run(KITCHEN, rpc_request("kitchen", "log"))
    assert r.returncode == 0
    assert r.stdout == "info line\nprinted line\n"
    assert r.stderr == "warning line\nerror line\n"
    r = run(KITCHEN, rpc_request("kitchen", "log"), env={"CHORIA_EXTERNAL_DEBUG": "1"})
    assert r.stdout == "debug line\ninfo line\nprinted line\n"


def test_facts(run):
    r = run(KITCHEN, rpc_request("kitchen", "facts"), facts='{"os": "linux", "n": 2}')
    assert r.reply == {"statuscode": 0, "statusmsg": "", "data": {"facts": {"os": "linux", "n": 2}}}
    r = run(KITCHEN, rpc_request("kitchen", "facts"), facts="")
    assert r.reply["data"] == {"facts": {}}


def test_legacy_import_style_and_separate_registries(run):
    r = run(LEGACY, rpc_request("legacy", "echo", {"message": "m"}))
    assert r.returncode == 0
    assert r.reply == {"statuscode": 0, "statusmsg": "", "data": {
        "message": "m", "name": "legacy", "registered": ["echo"], "same_base": True}}
    assert r.stdout == "legacy info\n"
    r = run(LEGACY, rpc_request("legacy", "other_only"))
    assert r.reply["statusmsg"] == "RPC Aborted: RPC Aborted: Unknown RPC Action: other_only"


def test_native_package_and_inherited_actions(run):
    r = run(NATIVE, rpc_request("native", "ping"))
    assert r.reply == {"statuscode": 0, "statusmsg": "", "data": {"pong": True}}
    r = run(NATIVE, rpc_request("native", "need"))
    assert r.reply == {"statuscode": 1, "statusmsg": "RPC Aborted: RPC Aborted: Missing Data: name", "data": {}}


@pytest.mark.parametrize("doc, why", [
    ({k: v for k, v in rpc_request("parrot", "echo").items() if k != "ttl"}, "'ttl' is a required property"),
    (rpc_request("parrot", "echo", ttl="60"), "is not of type 'integer'"),
    (rpc_request("parrot", "Echo"), "does not match"),
    (rpc_request("parrot", "echo", protocol="other"), "is not one of"),
    (rpc_request("parrot", "echo", data=[]), "is not of type 'object'"),
    ("not json", "not JSON"),
    # Refused before json.loads, whose C decoder recurses.
    (json.dumps(rpc_request("parrot", "echo"))[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}",
     "nests deeper than 132 levels"),
])
def test_invalid_request_exits_1_without_reply(run, doc, why):
    r = run(PARROT, doc, protocol=RPC)
    assert r.returncode == 1
    assert r.reply_text == ""
    assert why in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("action", ["nan", "inf"])
def test_a_reply_json_cannot_carry_fails_the_request(run, action):
    # py-mco-agent writes NaN and Infinity, which Choria's decoder refuses.
    r = run(WRAPPED, rpc_request("wrapped", action))
    assert r.returncode == 0
    assert r.reply_text == ('{"statuscode": 1, "statusmsg": "RPC Aborted: the reply cannot be sent: '
                            'it holds NaN or Infinity, which JSON cannot carry", "data": {}}')
    strict_json(r.reply_text)
    assert "the reply cannot be sent" in r.stderr


def test_an_overridden_dispatch_and_run(run):
    r = run(WRAPPED, rpc_request("wrapped", "ok"))
    assert r.reply_text == '{"statuscode": 0, "statusmsg": "", "data": {"ok": true, "wrapped": true}}'
    # py-mco-agent 0.3's dispatcher calls run(), which an agent may override.
    r = run(OLDRUN, rpc_request("oldrun", "ping"))
    assert r.reply_text == '{"statuscode": 0, "statusmsg": "", "data": {"wrapped": true, "pong": 1}}'
    r = run(OLDRUN, rpc_request("oldrun", "config"))
    assert r.reply == {"statuscode": 0, "statusmsg": "", "data": {"wrapped": True, "agent_name": "oldrun", "config": {}}}


def test_the_bundled_schemas_never_import_jsonschema(run):
    # jsonschema is installed here (the tests use it), and never imported.
    r = run(WRAPPED, rpc_request("wrapped", "modules"))
    assert r.reply["data"] == {"jsonschema": [], "wrapped": True}


def test_a_request_that_is_not_utf8(run):
    text = json.dumps(rpc_request("parrot", "echo", {"message": "\u00e9"}), ensure_ascii=False)
    r = run(PARROT, text.encode("latin-1"))
    assert (r.returncode, r.reply_text) == (1, "")
    assert "not UTF-8" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_unknown_protocol(run):
    r = run(PARROT, rpc_request("parrot", "echo"), protocol="io.example.nosuch")
    assert r.returncode == 1
    assert r.reply_text == ""
    assert "Unsupported message protocol io.example.nosuch" in r.stderr


def test_the_variable_names_the_protocol_not_argv(run):
    # argv's third argument is always the RPC protocol; the variable wins.
    r = run(PARROT, activation_request("parrot"), protocol=ACTIVATION)
    assert json.loads(r.reply_text) == {"activate": True}


def test_by_hand_argv_and_stdio(tmp_path):
    env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    request, reply = tmp_path / "request", tmp_path / "reply"
    request.write_text(json.dumps(rpc_request("parrot", "echo", {"message": "argv"})))
    p = subprocess.run([str(PARROT), str(request), str(reply), RPC], env=env, capture_output=True, text=True)
    assert p.returncode == 0
    assert json.loads(reply.read_text())["data"] == {"message": "argv"}
    p = subprocess.run([str(PARROT)], env=dict(env, CHORIA_EXTERNAL_PROTOCOL=RPC), capture_output=True, text=True,
                       input=json.dumps(rpc_request("parrot", "echo", {"message": "stdin"})))
    assert p.returncode == 0
    assert p.stdout == '{"statuscode": 0, "statusmsg": "", "data": {"message": "stdin"}}\n'
    p = subprocess.run([str(PARROT)], env=env, capture_output=True, text=True, input="")
    assert (p.returncode, p.stderr) == (1, "Unknown protocol\n")
