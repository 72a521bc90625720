"""The SDK checks documents against protocol/schemas without jsonschema:
its copies of the schemas and its validator must agree with the
published files and with the jsonschema library."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from conftest import SCHEMAS, nesting, rpc_request, schema_errors

VECTORS = Path(__file__).resolve().parent.parent.parent / "testdata" / "vectors" / "worker"
# The schemas the SDK validates what it reads with.
READ = ["io.choria.mcorpc.external.v1.rpc_request", "io.choria.mcorpc.external.v1.activation_request",
        "io.agent-host.worker.hello", "io.agent-host.worker.v1.request", "io.agent-host.worker.v1.cancel",
        "io.agent-host.worker.v1.ping", "io.agent-host.worker.v1.shutdown"]
WRONG_TYPES: List[Any] = [None, True, 0, 7, 1.5, "", "x", "Bad-Name", [], [1], ["a"], {}, {"k": 1}]


def installed_schemas() -> Path:
    out = subprocess.run([sys.executable, "-c", "import agent_host.protocol as p; print(p._SCHEMAS_DIR)"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def test_the_package_carries_the_published_schemas_unchanged():
    source = Path(__file__).resolve().parent.parent / "src" / "agent_host" / "schemas"
    for where in (source, installed_schemas()):
        names = sorted(p.name for p in where.glob("*.json"))
        published = sorted(p.name for p in SCHEMAS.glob("io.choria.mcorpc.external.v1.*.json")) + \
            sorted(p.name for p in SCHEMAS.glob("io.agent-host.worker.*.json"))
        assert names == sorted(published), where
        for name in names:
            assert (where / name).read_bytes() == (SCHEMAS / name).read_bytes(), \
                "%s differs from protocol/schemas (run `make generate`)" % (where / name)


def test_a_worker_request_carries_an_rpc_request():
    """The worker builds the request it was sent without checking it again:
    the worker request schema must check it as the rpc_request schema does."""
    embedded = json.loads((SCHEMAS / "io.agent-host.worker.v1.request.json").read_text())
    rpc = json.loads((SCHEMAS / "io.choria.mcorpc.external.v1.rpc_request.json").read_text())
    assert embedded["properties"]["request"]["$ref"] == "#/$defs/AgentRequest"
    assert embedded["$defs"]["AgentRequest"] == {k: v for k, v in rpc.items() if k != "$schema"}


def examples() -> Iterator[Tuple[str, Dict[str, Any]]]:
    """Valid documents of each schema the SDK reads."""
    request = rpc_request("parrot", "echo", {"message": "hi"})
    yield READ[0], request
    yield READ[1], {"$schema": "https://choria.io/schemas/mcorpc/external/v1/activation_request.json",
                    "protocol": "io.choria.mcorpc.external.v1.activation_request", "agent": "parrot"}
    for path in sorted(VECTORS.glob("*.json")):
        vector = json.loads(path.read_text())
        name = {"hello": READ[2], "request": READ[3], "cancel": READ[4], "ping": READ[5],
                "shutdown": READ[6]}.get(vector.get("type") or "")
        if name:
            yield name, json.loads(vector["line"])


def mutations(doc: Dict[str, Any], schema: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """The document with each key removed and each value (one level down
    too) replaced by values of every JSON type."""
    yield doc
    for key in list(doc):
        gone = dict(doc)
        del gone[key]
        yield gone
        for wrong in WRONG_TYPES:
            yield dict(doc, **{key: wrong})
        if isinstance(doc[key], dict):
            for inner in list(doc[key]):
                for wrong in WRONG_TYPES + ["UPPER", "with space", "a" * 300]:
                    changed = copy.deepcopy(doc)
                    changed[key][inner] = wrong
                    yield changed
                changed = copy.deepcopy(doc)
                del changed[key][inner]
                yield changed
    yield dict(doc, extra_key={"readers": "ignore it"})


def sdk_accepts(name: str, doc: Any) -> bool:
    from agent_host.exceptions import InvalidRPCData
    from agent_host.protocol import schema, validate

    try:
        validate(doc, schema(name))
    except InvalidRPCData:
        return False
    return True


def test_the_sdk_validator_agrees_with_jsonschema():
    checked = refused = 0
    for name, doc in examples():
        for variant in mutations(doc, json.loads((SCHEMAS / (name + ".json")).read_text())):
            want = not schema_errors(name, variant)
            assert sdk_accepts(name, variant) == want, "%s: %s: jsonschema says %s" % (
                name, json.dumps(variant)[:300], "valid" if want else schema_errors(name, variant))
            checked += 1
            refused += not want
    # The corpus must hold both kinds, for every schema the SDK reads.
    assert checked > 1000 and 0 < refused < checked
    assert {name for name, _ in examples()} == set(READ)


@pytest.mark.parametrize("name", sorted(p.stem for p in SCHEMAS.glob("*.json")))
def test_the_sdk_validator_understands_every_keyword_published(name):
    """A keyword the validator skips would silently accept what the schema refuses."""
    known = {"$schema", "$id", "id", "$ref", "$defs", "title", "description", "type", "enum", "required",
             "properties", "additionalProperties", "items", "minItems", "maxItems", "minLength",
             "maxLength", "pattern", "minimum", "maximum", "contentEncoding", "default"}
    found = set()

    def walk(node: Any, in_map: bool = False) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not in_map:
                    found.add(key)
                walk(value, in_map=not in_map and key in ("properties", "$defs", "patternProperties"))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads((SCHEMAS / (name + ".json")).read_text()))
    assert found <= known, found - known


# -- nesting, found before json.loads -------------------------------------------


def tricky_texts() -> Iterator[str]:
    yield from [
        "", "[]", "[[]]", "{}", '{"a": [[]]}', '"[[[["', '["[[[["]', '["\\\\"][[', '["\\\\\\"[["]',
        '["\\"]', '"\\', '[[\\', '[[["', '{"a":"\\\\\\\\"}[[', ']]][[[[', '[[]][[]]',
        '"' + '\\"' * 2000 + '[' * 10,  # an unclosed string full of escaped quotes
        '[' * 5 + '"' + '\\' * 7 + '"[[[[[[',
        '{"k\\u005b": "\\u005d[", "x": [[{"y": "]]]]"}]]}',
    ]
    rng = random.Random(4)
    for _ in range(3000):
        yield "".join(rng.choice('[]{}"\\ a') for _ in range(rng.randrange(1, 40)))


def test_nesting_is_found_as_protocol_limits_go_finds_it():
    from agent_host.protocol import too_deep

    for text in tricky_texts():
        for limit in (0, 1, 2, 3, 5):
            assert too_deep(text, limit) == (nesting(text) > limit), (text, limit, nesting(text))
    assert not too_deep("[" * 132 + "]" * 132) and too_deep("[" * 133 + "]" * 133)
    assert not too_deep('{"a": "' + "[" * 500 + '"}')
    assert too_deep('{"a": "\\\\"' + ", " + "[" * 133)  # the string ends after the escaped backslash


# -- the validator: keywords beyond the bundled schemas' --------------------------


KEYWORD_CASES: List[Tuple[Dict[str, Any], List[Any]]] = [
    ({"const": "fixed"}, ["fixed", "other", 1, None]),
    ({"const": [1, {"a": True}]}, [[1, {"a": True}], [1, {"a": 1}], [True, {"a": True}], [1.0, {"a": True}]]),
    ({"enum": [[1], {"a": False}]}, [[1], [True], {"a": False}, {"a": 0}]),
    ({"multipleOf": 3}, [9, 10, 9.0, 7.5, "9"]),
    ({"multipleOf": 0.1}, [0.3, 0.35, 10 ** 30, 2]),
    ({"exclusiveMinimum": 2, "exclusiveMaximum": 5}, [2, 2.0001, 4.9, 5, 6, "3"]),
    ({"minimum": 2, "maximum": 5}, [2, 5, 1.99, 5.01]),
    ({"minProperties": 1, "maxProperties": 2}, [{}, {"a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, []]),
    ({"uniqueItems": True}, [[1, 2], [1, 1], [1, True], [1, 1.0], [{"a": 1}, {"a": 1}], [[1], [True]], []]),
    ({"properties": {"a": False, "b": True}}, [{"a": 1}, {"b": 1}, {}]),
    ({"items": False}, [[], [1]]),
    ({"type": "string", "format": "ipv4"}, ["not an address", "10.0.0.1"]),  # format asserts nothing (jsonschema.validate)
]


@pytest.mark.parametrize("schema, values", KEYWORD_CASES)
def test_the_keywords_the_validator_implements_agree_with_jsonschema(schema, values):
    from jsonschema import Draft202012Validator

    from agent_host.exceptions import InvalidRPCData
    from agent_host.protocol import validate

    checked = Draft202012Validator(schema)
    for value in values:
        try:
            validate(value, schema)
            ours = True
        except InvalidRPCData:
            ours = False
        assert ours == checked.is_valid(value), (schema, value)


def test_draft_04_exclusive_bounds():
    from jsonschema import Draft4Validator

    from agent_host.exceptions import InvalidRPCData
    from agent_host.protocol import validate

    schema = {"minimum": 2, "exclusiveMinimum": True, "maximum": 5, "exclusiveMaximum": False}
    for value in (2, 3, 5, 6):
        try:
            validate(value, schema)
            ours = True
        except InvalidRPCData:
            ours = False
        assert ours == Draft4Validator(schema).is_valid(value), value


# A schema of one's own whose keywords the SDK's validator does not
# implement: jsonschema checks it when it can be imported, and it must
# never be silently unchecked.
UNIMPLEMENTED = {
    "anyOf": ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, 1, None),
    "oneOf": ({"oneOf": [{"required": ["b"]}, {"required": ["c"]}]}, {"b": 1}, {"b": 1, "c": 2}),
    "allOf": ({"allOf": [{"required": ["a"]}]}, {"a": 1}, {}),
    "not": ({"properties": {"a": {"not": {"const": 3}}}}, {"a": 4}, {"a": 3}),
    "if": ({"if": {"required": ["a"]}, "then": {"required": ["b"]}}, {"a": 1, "b": 2}, {"a": 1}),
    "patternProperties": ({"patternProperties": {"^x": {"type": "string"}}}, {"xa": "s"}, {"xa": 1}),
    "dependentRequired": ({"dependentRequired": {"a": ["b"]}}, {"a": 1, "b": 2}, {"a": 1}),
    "contains": ({"contains": {"const": 1}}, [1], [2]),
    "prefixItems": ({"prefixItems": [{"type": "string"}]}, ["s"], [1]),
    "propertyNames": ({"propertyNames": {"maxLength": 1}}, {"a": 1}, {"ab": 1}),
}


def _message_class(schema: Dict[str, Any]) -> Any:
    from choria_external.protocol import ProtocolMessage

    class Thing(ProtocolMessage):
        _protocol = "io.example.thing"
        _schema = schema

    return Thing


@pytest.mark.parametrize("keyword", sorted(UNIMPLEMENTED))
def test_unimplemented_keywords_are_checked_by_jsonschema(keyword):
    from choria_external.exceptions import InvalidRPCData

    schema, good, bad = UNIMPLEMENTED[keyword]
    thing = _message_class({"type": "object", "properties": {"v": schema}})
    assert thing.from_dict({"v": good}).v == good
    with pytest.raises(InvalidRPCData):
        thing.from_dict({"v": bad})


@pytest.mark.parametrize("keyword", sorted(UNIMPLEMENTED))
def test_unimplemented_keywords_without_jsonschema_are_refused(keyword, monkeypatch):
    import sys

    from choria_external.exceptions import ImproperlyConfigured

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema raises ImportError
    schema, good, _ = UNIMPLEMENTED[keyword]
    thing = _message_class({"properties": {"v": {"items": {"properties": {"w": schema}}}}})
    with pytest.raises(ImproperlyConfigured) as e:
        thing.from_dict({"v": [{"w": good}]})
    assert repr(keyword) in str(e.value) and "jsonschema" in str(e.value)


def test_keywords_that_assert_nothing_need_no_jsonschema(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jsonschema", None)
    thing = _message_class({"title": "t", "description": "d", "$comment": "c", "examples": [1], "default": {},
                            "x-vendor": {"anyOf": 1}, "format": "date-time",
                            "properties": {"anyOf": {"type": "string"}, "a": {"readOnly": True, "deprecated": True}},
                            "$defs": {"oneOf": {"type": "integer"}}})
    assert thing.from_dict({"anyOf": "s"}).anyOf == "s"
