"""The public names of py-mco-agent 0.3/0.4 and py-choria-external 0.1/0.2, in process."""

from __future__ import annotations

import json

import pytest


def test_public_names():
    import choria_external
    import choria_external.base
    import choria_external.config
    import choria_external.dispatcher
    import choria_external.exceptions
    import choria_external.protocol
    import mco_agent
    import mco_agent.agent
    import mco_agent.config
    import mco_agent.dispatcher
    import mco_agent.exceptions
    import mco_agent.protocol

    assert mco_agent.__all__ == ["__version__", "Agent", "action", "dispatch", "register_actions"]
    assert choria_external.__all__ == ["__version__", "dispatch"]
    for mod, names in [
        (mco_agent, "Agent action register_actions dispatch __version__"),
        (mco_agent.agent, "Agent action register_actions"),
        (mco_agent.config, "AgentConfig"),
        (mco_agent.dispatcher, "dispatch setup_logger read_request write_reply"),
        (mco_agent.exceptions, "AgentException InactiveAgent RPCAborted UnknownRPCAction InvalidRPCData ImproperlyConfigured"),
        (mco_agent.protocol, "ProtocolMessage Reply ExternalActivationRequest ExternalRPCRequest ActionReply ActivationReply"),
        (choria_external, "dispatch __version__"),
        (choria_external.base, "ChoriaExternal"),
        (choria_external.config, "Config"),
        (choria_external.dispatcher, "dispatch setup_logger read_request write_reply"),
        (choria_external.exceptions, "ChoriaExternalException RPCAborted UnknownRPCAction InvalidRPCData ImproperlyConfigured"),
        (choria_external.protocol, "ProtocolMessage Reply"),
    ]:
        for name in names.split():
            assert hasattr(mod, name), (mod.__name__, name)
    assert choria_external.dispatch is mco_agent.dispatch
    assert issubclass(mco_agent.Agent, choria_external.base.ChoriaExternal)


def test_exception_codes_and_text():
    from choria_external import exceptions as ce
    from mco_agent import exceptions as ma

    assert [(c.statuscode, c.description) for c in (
        ce.ChoriaExternalException, ce.RPCAborted, ce.UnknownRPCAction, ce.InvalidRPCData,
        ce.ImproperlyConfigured, ma.AgentException, ma.InactiveAgent)] == [
        (5, "Unknown error"), (1, "RPC Aborted"), (2, "Unknown RPC Action"), (4, "Invalid Data"),
        (5, "RPC Aborted"), (5, "Unknown error"), (5, "Agent is not activated")]
    assert str(ce.RPCAborted("a", "b")) == "RPC Aborted: a b"
    assert str(ma.InactiveAgent()) == "Agent is not activated: "


def test_requests():
    from choria_external.exceptions import InvalidRPCData
    from mco_agent.protocol import ExternalActivationRequest, ExternalRPCRequest, ProtocolMessage

    from conftest import ACTIVATION, RPC, activation_request, rpc_request

    req = ExternalRPCRequest.from_json(json.dumps(rpc_request("parrot", "echo", {"message": "x"})))
    assert (req.agent, req.action, req.ttl, req.data) == ("parrot", "echo", 60, {"message": "x"})
    with pytest.raises(AttributeError):
        getattr(req, "$schema")
    with pytest.raises(AttributeError):
        req.nosuch
    with pytest.raises(InvalidRPCData):
        ExternalRPCRequest.from_dict({"invalid_dict": True})
    doc = rpc_request("parrot", "echo")
    del doc["$schema"]
    with pytest.raises(InvalidRPCData):
        ExternalRPCRequest.from_dict(doc)
    act = ExternalActivationRequest.from_dict(activation_request("parrot"))
    assert act.agent == "parrot"
    assert ProtocolMessage.get_protocol(RPC) is ExternalRPCRequest
    assert ProtocolMessage.get_protocol(ACTIVATION) is ExternalActivationRequest
    with pytest.raises(InvalidRPCData):
        ProtocolMessage.get_protocol("nosuch")
    with pytest.raises(InvalidRPCData):
        ProtocolMessage.create_reply()


def test_register_protocol_with_a_schema_file(tmp_path, monkeypatch):
    import importlib
    import sys

    from choria_external.protocol import ProtocolMessage

    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "io.example.thing.json").write_text(json.dumps({
        "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}))
    (tmp_path / "thingproto.py").write_text(
        "from choria_external.protocol import ProtocolMessage\n"
        "@ProtocolMessage.register_protocol()\n"
        "class Thing(ProtocolMessage):\n"
        "    _protocol = 'io.example.thing'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("thingproto")
    try:
        assert ProtocolMessage.get_protocol("io.example.thing") is mod.Thing
        assert mod.Thing.from_dict({"name": "n"}).name == "n"
        with pytest.raises(Exception):
            mod.Thing.from_dict({"name": 1})
    finally:
        ProtocolMessage._protocols.pop("io.example.thing", None)
        sys.modules.pop("thingproto", None)


def test_replies():
    from mco_agent.protocol import ActionReply, ActivationReply

    r = ActionReply()
    assert (r.statuscode, r.statusmsg, r.data, r.successful()) == (0, "", {}, True)
    assert r.to_json() == '{"statuscode": 0, "statusmsg": "", "data": {}}'
    r.fail(1, "test")
    assert (r.statuscode, r.statusmsg, r.successful()) == (1, "test", False)
    a = ActivationReply()
    assert (a.activate, a.successful(), a.to_json()) == (True, True, '{"activate": true}')
    a.fail()
    assert a.to_json() == '{"activate": false}'


def test_config_paths(tmp_path, monkeypatch):
    from choria_external.config import Config
    from mco_agent.config import AgentConfig

    monkeypatch.delenv("CHORIA_EXTERNAL_CONFIG", raising=False)
    assert Config("testagent").config_file == "/etc/puppetlabs/mcollective/plugin.d/testagent"
    monkeypatch.setenv("CHORIA_EXTERNAL_CONFIG", str(tmp_path / "testagent"))
    c = AgentConfig("testagent")
    assert c.agent_name == "testagent"
    assert not c.config_exists()
    c.read_config()
    assert c.get("x", "d") == "d" and "x" not in c
    (tmp_path / "testagent").mkdir()
    (tmp_path / "testagent" / "testagent.cfg").write_text("x = 1\n")
    c = Config("testagent")
    c.read_config()
    assert (c["x"], "x" in c, c.get("x")) == ("1", True, "1")


def test_action_registry_is_per_class():
    from mco_agent import Agent, action, register_actions

    @register_actions
    class One(Agent):
        @action
        def a(self):
            pass

    @register_actions
    class Two(Agent):
        @action
        def b(self):
            pass

    assert sorted(One._actions) == ["a"]
    assert sorted(Two._actions) == ["b"]
    assert Agent._actions == {}


# The names each module of the real packages has once imported alone
# (dir() in a fresh interpreter), taken from py-mco-agent 0.4.0 with
# py-choria-external 0.2.0 and 0.1.0, and py-mco-agent 0.3.3; without the
# dunders, the standard library modules they happened to import (json, os,
# sys, logging, inspect) and `from __future__ import print_function`.
REAL_NAMES = {
    "mco_agent": "Agent __all__ __version__ action agent config dispatch dispatcher exceptions protocol register_actions version",
    "mco_agent.agent": "Agent AgentConfig AgentException ChoriaExternal ChoriaExternalException Config "
                       "ExternalActivationRequest ExternalRPCRequest InactiveAgent RPCAborted UnknownRPCAction action "
                       "register_actions",
    "mco_agent.config": "AgentConfig",
    "mco_agent.dispatcher": "Agent AgentException ExternalActivationRequest ExternalRPCRequest ImproperlyConfigured "
                            "InactiveAgent ProtocolMessage RPCAborted dispatch read_request setup_logger write_reply",
    "mco_agent.exceptions": "AgentException ImproperlyConfigured InactiveAgent InvalidRPCData RPCAborted UnknownRPCAction",
    "mco_agent.protocol": "ActionReply ActivationReply ExternalActivationRequest ExternalRPCRequest ImproperlyConfigured "
                          "InvalidRPCData ProtocolMessage Reply ValidationError validate",
    "mco_agent.version": "__version__",
    "choria_external": "__all__ __version__ dispatch dispatcher exceptions protocol version",
    "choria_external.base": "ChoriaExternal ChoriaExternalException Config RPCAborted",
    "choria_external.config": "Config",
    "choria_external.dispatcher": "ProtocolMessage dispatch read_request setup_logger write_reply",
    "choria_external.exceptions": "ChoriaExternalException ImproperlyConfigured InvalidRPCData RPCAborted UnknownRPCAction",
    "choria_external.protocol": "ImproperlyConfigured InvalidRPCData ProtocolMessage Reply ValidationError validate",
    "choria_external.version": "__version__",
}


@pytest.mark.parametrize("module", sorted(REAL_NAMES))
def test_every_module_has_the_names_of_the_real_releases(module):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import importlib, json; print(json.dumps(dir(importlib.import_module(%r))))" % module],
                         capture_output=True, text=True, check=True)
    missing = sorted(set(REAL_NAMES[module].split()) - set(json.loads(out.stdout)))
    assert not missing, "%s lacks %s" % (module, missing)


def test_compatible_names_are_the_same_objects():
    import choria_external
    import choria_external.protocol as ce_protocol
    import mco_agent.protocol as ma_protocol
    from agent_host.exceptions import ImproperlyConfigured, InvalidRPCData

    assert choria_external.exceptions.InvalidRPCData is ma_protocol.InvalidRPCData is InvalidRPCData
    assert ma_protocol.ImproperlyConfigured is ImproperlyConfigured
    # What validate raises: the SDK's validator raises InvalidRPCData.
    assert ce_protocol.ValidationError is ma_protocol.ValidationError is InvalidRPCData
    with pytest.raises(ma_protocol.ValidationError):
        ma_protocol.validate({"a": 1}, {"type": "object", "properties": {"a": {"type": "string"}}})


def test_agent_config_of_0_3(tmp_path, monkeypatch):
    from mco_agent.config import AgentConfig

    monkeypatch.setenv("CHORIA_EXTERNAL_CONFIG", str(tmp_path))
    (tmp_path / "thing.cfg").write_text("k = v\n")
    c = AgentConfig(agent_name="thing")
    c.read_config()
    assert (c.agent_name, c.plugin_name, c.config) == ("thing", "thing", {"k": "v"})
    c.agent_name = "other"
    assert c.plugin_name == "other"


def test_agent_name_of_0_3_can_be_set():
    from mco_agent import Agent
    from mco_agent.protocol import ActionReply

    a = Agent(request=None, reply=ActionReply())
    assert a.agent_name == a.plugin_name == "agent"
    a.agent_name = "renamed"
    assert a.plugin_name == "renamed"
