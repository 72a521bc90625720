"""agent-host's own lifecycle events, as the Go publisher encodes them
(testdata/vectors/lifecycle, kept current by the lifecycle package's
TestVectors), are valid by the schemas protocol/schemas publishes for
event consumers, and those schemas refuse what a consumer must not take."""
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import SCHEMAS, schema_errors

VECTORS = Path(__file__).resolve().parent.parent.parent / "testdata" / "vectors" / "lifecycle"
TYPES = ["agent_changed", "worker_started", "worker_recycled", "worker_exited"]


def vector(name: str) -> Dict[str, Any]:
    event: Dict[str, Any] = json.loads((VECTORS / (name + ".json")).read_text())
    return event


def test_every_event_type_has_a_vector_and_a_schema():
    assert sorted(p.stem for p in VECTORS.glob("*.json")) == sorted(TYPES)
    published = sorted(p.name[len("io.agent-host.lifecycle.v1."):-len(".json")]
                       for p in SCHEMAS.glob("io.agent-host.lifecycle.v1.*.json"))
    assert published == sorted(TYPES)


@pytest.mark.parametrize("name", TYPES)
def test_the_published_event_is_valid(name: str):
    event = vector(name)
    assert event["specversion"] == "1.0" and event["source"] == "io.agent-host.lifecycle"
    assert event["type"] == event["data"]["protocol"] == "io.agent-host.lifecycle.v1." + name
    assert event["id"] == event["data"]["id"] and event["subject"] == event["data"]["identity"]
    assert schema_errors(event["type"], event["data"]) == []


@pytest.mark.parametrize("name", TYPES)
def test_the_schema_refuses_broken_events(name: str):
    data = vector(name)["data"]
    schema = json.loads((SCHEMAS / ("io.agent-host.lifecycle.v1." + name + ".json")).read_text())
    required: List[str] = schema["required"]
    assert {"protocol", "id", "identity", "component", "timestamp", "agent"} <= set(required)
    for key in required:
        gone = {k: v for k, v in data.items() if k != key}
        assert schema_errors("io.agent-host.lifecycle.v1." + name, gone), "accepted without " + key
    for key, value in data.items():
        wrong = "seven" if not isinstance(value, str) else 7
        assert schema_errors("io.agent-host.lifecycle.v1." + name, dict(data, **{key: wrong})), \
            "accepted %s = %r" % (key, wrong)
    other = [t for t in TYPES if t != name][0]
    assert schema_errors("io.agent-host.lifecycle.v1." + name, dict(data, protocol="io.agent-host.lifecycle.v1." + other))
    if "reason" in data:
        assert schema_errors("io.agent-host.lifecycle.v1." + name, dict(data, reason="bored"))
