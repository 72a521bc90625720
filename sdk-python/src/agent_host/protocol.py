"""The external agent protocol's documents: requests and replies.

Requests are checked against the JSON Schemas that ``protocol/schemas``
publishes (the package carries copies, ``schemas/``) by a small built-in
validator covering the keywords those schemas use, so no ``jsonschema``
import is paid on every exec start.
"""

from __future__ import annotations

import json
import os

from agent_host.exceptions import ImproperlyConfigured, InvalidRPCData

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Set, Type, TypeVar

    P = TypeVar("P", bound="ProtocolMessage")

RPC_REQUEST = "io.choria.mcorpc.external.v1.rpc_request"
RPC_REPLY = "io.choria.mcorpc.external.v1.rpc_reply"
ACTIVATION_REQUEST = "io.choria.mcorpc.external.v1.activation_request"
ACTIVATION_REPLY = "io.choria.mcorpc.external.v1.activation_reply"

# How deeply a document may nest arrays and objects (PROTOCOL.md 3): checked
# before json.loads, whose C decoder recurses.
MAX_DEPTH = 132

_SCHEMAS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")
_schemas: Dict[str, Dict[str, Any]] = {}


def schema(name: str) -> Dict[str, Any]:
    """The JSON Schema ``name`` (say ``io.agent-host.worker.v1.request``) as
    ``protocol/schemas`` publishes it; the package carries copies of those
    files, read once on first use."""
    found = _schemas.get(name)
    if found is None:
        with open(os.path.join(_SCHEMAS_DIR, name + ".json"), "r", encoding="utf-8") as fp:
            found = _schemas[name] = json.load(fp)
        # The validator implements every keyword these use.
        _validators[id(found)] = (found, None)
    return found


class _KeepBrackets(dict):  # type: ignore[type-arg]
    def __missing__(self, key: int) -> Optional[int]:
        return key if chr(key) in "[]{}" else None


_BRACKETS_ONLY = _KeepBrackets()
_STRING: Any = None


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects deeper than ``limit``,
    found without decoding it, in time linear in its length.

    It reads the text as protocol/limits.go's ``CheckDepth`` does: a ``"``
    outside a string opens one, which a ``\\`` escapes the next character
    of and the next unescaped ``"`` closes (an unclosed string runs to the
    end); ``[`` and ``{`` outside strings nest one level deeper, ``]`` and
    ``}`` one less. The strings are cut out by one regular expression
    whose every match runs from an opening quote to its closing one (or
    the end), so no match is ever abandoned and retried.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    global _STRING
    if _STRING is None:
        import re

        _STRING = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)')
    depth = 0
    for c in _STRING.sub("", text).translate(_BRACKETS_ONLY):
        if c in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def loads(text: str) -> Any:
    """``json.loads``, refusing text nested deeper than ``MAX_DEPTH`` first."""
    if too_deep(text):
        raise ValueError("the document nests deeper than %d levels" % MAX_DEPTH)
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("the document nests too deeply") from None


_TYPES: Dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}

# The keywords the validator implements, and those that assert nothing
# (jsonschema.validate, which py-mco-agent calls, checks no "format" either).
_IMPLEMENTED = frozenset((
    "$ref", "type", "enum", "const", "required", "properties", "additionalProperties", "items",
    "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minProperties", "maxProperties",
))
_ANNOTATIONS = frozenset((
    "$schema", "$id", "id", "$anchor", "$comment", "$vocabulary", "$defs", "definitions", "title",
    "description", "default", "examples", "format", "contentEncoding", "contentMediaType",
    "contentSchema", "readOnly", "writeOnly", "deprecated",
))
# The assertions of JSON Schema (drafts 4 to 2020-12) the validator leaves
# to jsonschema.
_UNIMPLEMENTED = frozenset((
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "dependentRequired",
    "dependencies", "patternProperties", "propertyNames", "contains", "minContains", "maxContains",
    "prefixItems", "additionalItems", "unevaluatedItems", "unevaluatedProperties", "$dynamicRef",
    "$recursiveRef", "$dynamicAnchor", "$recursiveAnchor",
))

# id(schema) -> (schema, None: the built-in validator | the keyword it lacks).
# The schema is kept so that its id is not reused.
_validators: Dict[int, Any] = {}


def validate(value: Any, schema: Dict[str, Any], path: str = "", root: Optional[Dict[str, Any]] = None) -> None:
    """Checks ``value`` against ``schema``; raises ``InvalidRPCData`` with the first problem.

    The built-in validator implements the keywords of ``protocol/schemas``
    and of Choria's draft-04 schemas, and a few more: ``$ref`` (to ``#/...``
    in the same schema), ``type``, ``enum``, ``const``, ``required``,
    ``properties``, ``additionalProperties``, ``items`` (one schema),
    ``minItems``, ``maxItems``, ``uniqueItems``, ``minLength``,
    ``maxLength``, ``pattern``, ``minimum``, ``maximum``,
    ``exclusiveMinimum``, ``exclusiveMaximum`` (draft 4's booleans too),
    ``multipleOf``, ``minProperties`` and ``maxProperties``, and boolean
    schemas; annotations (``description``, ``format``...) assert nothing.

    A schema that is not one the package carries and uses another
    assertion (``anyOf``, ``oneOf``, ``not``, ``patternProperties``...) is
    checked by the ``jsonschema`` library instead when it can be imported;
    without it, ``ImproperlyConfigured`` names the keyword: a schema is
    never silently checked in part.
    """
    if root is None:
        found = _validators.get(id(schema))
        if found is None or found[0] is not schema:
            found = _validators[id(schema)] = (schema, _unimplemented(schema, schema))
        if found[1] is not None:
            _with_jsonschema(value, schema, found[1])
            return
        root = schema
    _check(value, schema, path, root)


def _unimplemented(node: Any, root: Dict[str, Any], seen: Optional[Set[int]] = None) -> Optional[str]:
    """The first assertion keyword in the schema ``node`` (of the schema
    ``root``) the built-in validator does not implement, or ``None``."""
    if not isinstance(node, dict):
        return None
    seen = set() if seen is None else seen
    if id(node) in seen:
        return None
    seen.add(id(node))
    subschemas: List[Any] = []
    for key, sub in node.items():
        if key in _UNIMPLEMENTED:
            return str(key)
        if key == "$ref":
            if not (isinstance(sub, str) and sub.startswith("#")):
                return "$ref"  # to another document
            try:
                subschemas.append(_resolve(root, sub))
            except ImproperlyConfigured:
                pass  # said when validating
        elif key == "items" and isinstance(sub, list):
            return "items"  # the array form (draft 4 to 2019-09)
        elif key == "type":
            names = sub if isinstance(sub, list) else [sub]
            if not all(isinstance(n, str) for n in names):
                return "type"  # draft 3's schemas in "type"
        elif key in ("properties", "$defs", "definitions") and isinstance(sub, dict):
            subschemas += sub.values()
        elif key in ("additionalProperties", "items"):
            subschemas.append(sub)
    for sub in subschemas:
        found = _unimplemented(sub, root, seen)
        if found is not None:
            return found
    return None


def _with_jsonschema(value: Any, schema: Dict[str, Any], keyword: str) -> None:
    try:
        import importlib

        jsonschema: Any = importlib.import_module("jsonschema")
    except ImportError:
        raise ImproperlyConfigured(
            "the schema uses %r, which agent_host's validator does not implement: "
            "install jsonschema to have it checked" % keyword) from None
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        raise InvalidRPCData("%s%s" % (e.message, " in %s" % where if where else "")) from None
    except jsonschema.SchemaError as e:
        raise ImproperlyConfigured("the schema is not valid: %s" % e.message) from None


def _check(value: Any, schema: Any, path: str, root: Dict[str, Any]) -> None:
    where = " in %s" % path if path else ""
    if schema is True:
        return
    if schema is False:
        raise InvalidRPCData("%s is not allowed%s" % (_short(value), where))
    ref = schema.get("$ref")
    if ref is not None:
        _check(value, _resolve(root, ref), path, root)
    want = schema.get("type")
    if want is not None:
        names = want if isinstance(want, list) else [want]
        if not any(_TYPES.get(n, lambda v: True)(value) for n in names):
            raise InvalidRPCData("%s is not of type %s%s" % (_short(value), ", ".join(repr(n) for n in names), where))
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        raise InvalidRPCData("%s is not one of %r%s" % (_short(value), schema["enum"], where))
    if "const" in schema and not _same(value, schema["const"]):
        raise InvalidRPCData("%s is not %s%s" % (_short(value), _short(schema["const"]), where))
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                raise InvalidRPCData("%r is a required property%s" % (key, where))
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            raise InvalidRPCData("%s has fewer than %d properties%s" % (_short(value), schema["minProperties"], where))
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            raise InvalidRPCData("%s has more than %d properties%s" % (_short(value), schema["maxProperties"], where))
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key in value:
                _check(value[key], sub, "%s.%s" % (path, key) if path else key, root)
        extra = schema.get("additionalProperties", True)
        if extra is not True:
            for key in value:
                if key in props:
                    continue
                if extra is False:
                    raise InvalidRPCData("additional property %r is not allowed%s" % (key, where))
                _check(value[key], extra, "%s.%s" % (path, key) if path else key, root)
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise InvalidRPCData("%s has fewer than %d items%s" % (_short(value), schema["minItems"], where))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise InvalidRPCData("%s has more than %d items%s" % (_short(value), schema["maxItems"], where))
        if schema.get("uniqueItems") is True:
            for i in range(1, len(value)):
                if any(_same(value[i], value[j]) for j in range(i)):
                    raise InvalidRPCData("%s has non-unique items%s" % (_short(value), where))
        items = schema.get("items")
        if isinstance(items, (dict, bool)):
            for i, item in enumerate(value):
                _check(item, items, "%s[%d]" % (path, i), root)
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise InvalidRPCData("%s is too short%s" % (_short(value), where))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise InvalidRPCData("%s is too long%s" % (_short(value), where))
        if "pattern" in schema:
            import re

            if not re.search(schema["pattern"], value):
                raise InvalidRPCData("%s does not match %r%s" % (_short(value), schema["pattern"], where))
    elif _TYPES["number"](value):
        _check_number(value, schema, where)


def _check_number(value: Any, schema: Dict[str, Any], where: str) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    # Draft 4: exclusiveMinimum/Maximum are booleans that make the bounds strict.
    if xlow is True and low is not None:
        xlow, low = low, None
    if xhigh is True and high is not None:
        xhigh, high = high, None
    if isinstance(low, (int, float)) and value < low:
        raise InvalidRPCData("%s is less than the minimum of %s%s" % (value, low, where))
    if isinstance(high, (int, float)) and value > high:
        raise InvalidRPCData("%s is greater than the maximum of %s%s" % (value, high, where))
    if isinstance(xlow, (int, float)) and not isinstance(xlow, bool) and value <= xlow:
        raise InvalidRPCData("%s is less than or equal to the exclusive minimum of %s%s" % (value, xlow, where))
    if isinstance(xhigh, (int, float)) and not isinstance(xhigh, bool) and value >= xhigh:
        raise InvalidRPCData("%s is greater than or equal to the exclusive maximum of %s%s" % (value, xhigh, where))
    step = schema.get("multipleOf")
    if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
        if isinstance(step, float) or isinstance(value, float):
            try:
                q = value / step
                failed = int(q) != q
            except OverflowError:
                from fractions import Fraction

                failed = Fraction(value) % Fraction(step) != 0
        else:
            failed = value % step != 0
        if failed:
            raise InvalidRPCData("%s is not a multiple of %s%s" % (value, step, where))


def _resolve(root: Dict[str, Any], ref: str) -> Dict[str, Any]:
    if not ref.startswith("#"):
        raise ImproperlyConfigured("schema reference %r is not within the schema" % ref)
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise ImproperlyConfigured("schema reference %r is not found" % ref)
        node = node[part]
    if not isinstance(node, (dict, bool)):
        raise ImproperlyConfigured("schema reference %r is not a schema" % ref)
    return node  # type: ignore[return-value]


def _same(a: Any, b: Any) -> bool:
    """JSON equality (for ``enum``, ``const``, ``uniqueItems``): ``true`` is
    not ``1``, at any depth; ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ProtocolMessage:
    """A document of one protocol, its schema's ``properties`` read as attributes.

    Subclasses name their protocol in ``_protocol`` and give their schema
    in ``_schema``, or leave it ``None`` to have ``load_schema`` read
    ``schemas/<protocol>.json`` beside the module defining the subclass.
    ``@ProtocolMessage.register_protocol()`` makes ``get_protocol`` find them.
    """

    _protocols: Dict[str, Type[ProtocolMessage]] = {}
    _protocol: Optional[str] = None
    _schema: Optional[Dict[str, Any]] = None

    def __init__(self, **kwargs: Any) -> None:
        if self._schema is None:
            raise ImproperlyConfigured(
                "Must call {0}.load_schema before constructing an object".format(type(self).__name__))
        props = {}
        for prop in self._schema.get("properties", {}):
            # The published schemas list the document's "$schema" key too;
            # py-mco-agent's objects never had it as an attribute.
            if prop != "$schema":
                props[prop] = kwargs.get(prop)
        self.__dict__["_properties"] = props

    def __getattr__(self, item: str) -> Any:
        props = self.__dict__.get("_properties")
        if props is None or item not in props:
            raise AttributeError(item)
        return props[item]

    def to_dict(self) -> Dict[str, Any]:
        """The document's properties as a dict."""
        return dict(self._properties)

    def __repr__(self) -> str:
        return "%s(%r)" % (type(self).__name__, self._properties)

    @classmethod
    def load_schema(cls) -> None:
        if cls._schema is not None:
            return
        import sys

        module = sys.modules.get(cls.__module__)
        if module is not None and module.__name__ == __name__:
            cls._schema = schema(cls._protocol or "")
            return
        base = os.path.dirname(getattr(module, "__file__", None) or ".")
        with open(os.path.join(base, "schemas", "{0}.json".format(cls._protocol)), "r", encoding="utf-8") as fp:
            cls._schema = json.load(fp)

    @classmethod
    def get_protocol(cls, protocol_name: str) -> Type[ProtocolMessage]:
        if protocol_name not in cls._protocols:
            raise InvalidRPCData("Unsupported message protocol {0}".format(protocol_name))
        return cls._protocols[protocol_name]

    @classmethod
    def from_json(cls: Type[P], request: str) -> P:
        try:
            message = loads(request)
        except ValueError as e:
            raise InvalidRPCData("request is not JSON: %s" % e) from None
        return cls.from_dict(message)

    @classmethod
    def from_dict(cls: Type[P], message: Any) -> P:
        cls.load_schema()
        assert cls._schema is not None
        validate(message, cls._schema)
        return cls._from_checked(message)

    @classmethod
    def _from_checked(cls: Type[P], message: Dict[str, Any]) -> P:
        """The object for a message already checked against the schema."""
        cls.load_schema()
        fields = dict(message)
        cls.parse_message_hook(fields)
        return cls(**fields)

    @classmethod
    def parse_message_hook(cls, fields: Dict[str, Any]) -> None:
        """Lets a subclass change the fields before the object is built."""

    @staticmethod
    def create_reply() -> Reply:
        raise InvalidRPCData("Method should only be called for a ProtocolMessage subclass")

    @classmethod
    def register_protocol(cls) -> Callable[[Type[P]], Type[P]]:
        def decorator(protocol_cls: Type[P]) -> Type[P]:
            if protocol_cls._protocol is None:
                raise ImproperlyConfigured("ProtocolMessage classes must define _protocol name")
            cls._protocols[protocol_cls._protocol] = protocol_cls
            return protocol_cls

        return decorator


class Reply:
    """Base of the reply documents."""

    _protocol: Optional[str] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def successful(self) -> bool:
        return True

    def to_json(self) -> str:
        raise NotImplementedError


class ActionReply(Reply):
    """The reply to an RPC request: ``statuscode``, ``statusmsg`` and ``data``.

    Written as ``{"statuscode": 0, "statusmsg": "", "data": {...}}``, those
    keys in that order with ``json.dumps``' default separators.
    ``disableresponse`` is kept for compatibility and never written.
    """

    _protocol = RPC_REPLY

    def __init__(self, statuscode: int = 0, statusmsg: str = "", data: Optional[Dict[str, Any]] = None,
                 disableresponse: bool = False, *args: Any, **kwargs: Any) -> None:
        Reply.__init__(self, *args, **kwargs)
        self.statuscode = statuscode
        self.statusmsg = statusmsg
        self.data: Dict[str, Any] = data if data else {}
        self.disableresponse = disableresponse

    def fail(self, code: int, message: str) -> None:
        """Sets the status code and message; the action carries on."""
        self.statuscode = code
        self.statusmsg = message

    def successful(self) -> bool:
        return self.statuscode == 0

    def to_dict(self) -> Dict[str, Any]:
        return {"statuscode": self.statuscode, "statusmsg": self.statusmsg, "data": self.data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


class ActivationReply(Reply):
    """The reply to an activation check: ``{"activate": true|false}``."""

    _protocol = ACTIVATION_REPLY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Reply.__init__(self, *args, **kwargs)
        self.activate = True
        # The worker protocol versions offered to agent-host (PROTOCOL.md 1).
        self.worker_versions: Optional[List[int]] = None

    def fail(self, *args: Any) -> None:
        """Declines activation (any arguments are ignored)."""
        self.activate = False

    def successful(self) -> bool:
        return self.activate is True

    def to_dict(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"activate": self.activate}
        if self.worker_versions:
            doc["agent_host_worker"] = {"versions": list(self.worker_versions)}
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@ProtocolMessage.register_protocol()
class ExternalActivationRequest(ProtocolMessage):
    """An activation check: ``.protocol`` and ``.agent``."""

    _protocol = ACTIVATION_REQUEST

    @staticmethod
    def create_reply() -> ActivationReply:
        return ActivationReply()


@ProtocolMessage.register_protocol()
class ExternalRPCRequest(ProtocolMessage):
    """An RPC request: ``.protocol .agent .action .requestid .senderid .callerid
    .collective .ttl .msgtime .data``."""

    _protocol = RPC_REQUEST

    @staticmethod
    def create_reply() -> ActionReply:
        return ActionReply()


__all__ = [
    "RPC_REQUEST", "RPC_REPLY", "ACTIVATION_REQUEST", "ACTIVATION_REPLY",
    "MAX_DEPTH", "schema", "too_deep", "loads", "validate",
    "ProtocolMessage", "Reply", "ActionReply", "ActivationReply",
    "ExternalActivationRequest", "ExternalRPCRequest",
]
