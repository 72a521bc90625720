"""The SDK checks documents against protocol/schemas without jsonschema:
its copies of the schemas and its validator must agree with the
published files and with the jsonschema library."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from conftest import SCHEMAS, rpc_request, schema_errors

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
