"""A small validator for Apple's device-management YAML payload schemas (test-only).

Reads tests/schemas/device-management/mdm/profiles/*.yaml with PyYAML and checks a profile
dictionary against them: required keys (TopLevel, CommonPayloadKeys plus the payload type's own
keys), plist types, allowed values (rangelist), numeric range, string format, and the subkeys of
dictionaries and arrays. It imports nothing from builder/, so it is independent evidence about
what builder/profiles/ writes. Format described in docs/schema.md of apple/device-management
(see tests/schemas/README.md).
"""

from __future__ import annotations

import datetime
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import SCHEMAS

PROFILE_SCHEMAS = SCHEMAS / "mdm" / "profiles"

_TYPES: dict[str, Any] = {
    "<string>": str,
    "<integer>": int,
    "<real>": float,
    "<boolean>": bool,
    "<data>": bytes,
    "<date>": datetime.datetime,
    "<array>": list,
    "<dictionary>": dict,
}


@lru_cache(maxsize=None)
def load_schema(name: str, directory: Path = PROFILE_SCHEMAS) -> dict:
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(name)
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _type_ok(value: Any, type_name: str) -> bool:
    if type_name == "<any>":
        return True
    expected = _TYPES.get(type_name)
    if expected is None:
        raise ValueError(f"schema uses unknown type {type_name!r}")
    if expected is int:  # plist <integer>: bool is a Python int subclass but a different plist type
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def validate_value(value: Any, spec: dict, where: str) -> list[str]:
    type_name = spec.get("type", "<any>")
    if not _type_ok(value, type_name):
        return [f"{where}: expected {type_name}, found {type(value).__name__}"]
    errors: list[str] = []
    if "rangelist" in spec and type_name not in ("<array>", "<dictionary>"):
        if not any(type(r) is type(value) and r == value for r in spec["rangelist"]):
            errors.append(f"{where}: {value!r} is not one of {spec['rangelist']}")
    rng = spec.get("range")
    if rng and isinstance(value, (int, float)):
        if "min" in rng and value < rng["min"]:
            errors.append(f"{where}: {value!r} is below the minimum {rng['min']}")
        if "max" in rng and value > rng["max"]:
            errors.append(f"{where}: {value!r} is above the maximum {rng['max']}")
    if "format" in spec and isinstance(value, str) and not re.fullmatch(spec["format"], value):
        errors.append(f"{where}: {value!r} does not match the format {spec['format']!r}")
    subkeys = spec.get("subkeys")
    if type_name == "<dictionary>" and subkeys:
        errors += validate_keys(value, subkeys, where)
    elif type_name == "<array>":
        rep = spec.get("repetition") or {}
        if "min" in rep and len(value) < rep["min"]:
            errors.append(f"{where}: needs at least {rep['min']} items")
        if "max" in rep and len(value) > rep["max"]:
            errors.append(f"{where}: allows at most {rep['max']} items")
        if subkeys:
            item_spec = subkeys[0]
            for i, item in enumerate(value):
                errors += validate_value(item, item_spec, f"{where}[{i}]")
    return errors


def validate_keys(d: Any, keys: list[dict], where: str, *, optional: frozenset[str] = frozenset()) -> list[str]:
    """Check a dictionary against a payloadkeys/subkeys list: required, unknown, each value."""
    if not isinstance(d, dict):
        return [f"{where}: expected <dictionary>, found {type(d).__name__}"]
    specs = {k["key"]: k for k in keys}
    wildcard = specs.get("ANY")
    errors = [f"{where}: missing required key {name}"
              for name, spec in specs.items()
              if name != "ANY" and spec.get("presence") == "required" and name not in d
              and name not in optional]
    for name in sorted(d):
        spec = specs.get(name, wildcard)
        if spec is None:
            errors.append(f"{where}: unknown key {name}")
            continue
        errors += validate_value(d[name], spec, f"{where}.{name}")
    return errors


def validate_payload(payload: Any, where: str = "payload") -> list[str]:
    """One PayloadContent item: CommonPayloadKeys plus the keys of its PayloadType's schema."""
    if not isinstance(payload, dict):
        return [f"{where}: expected <dictionary>, found {type(payload).__name__}"]
    ptype = payload.get("PayloadType")
    try:
        schema = load_schema(str(ptype))
    except KeyError:
        return [f"{where}: no schema for PayloadType {ptype!r}"]
    if schema["payload"].get("payloadtype") != ptype:
        return [f"{where}: schema file for {ptype!r} describes {schema['payload'].get('payloadtype')!r}"]
    keys = load_schema("CommonPayloadKeys")["payloadkeys"] + schema["payloadkeys"]
    return validate_keys(payload, keys, where)


def validate_profile(profile: Any) -> list[str]:
    """A whole profile: TopLevel keys, then every payload. Empty list = valid."""
    top = load_schema("TopLevel")["payloadkeys"]
    encrypted = isinstance(profile, dict) and profile.get("IsEncrypted") is True
    errors = validate_keys(profile, top, "profile",
                           optional=frozenset({"PayloadContent"}) if encrypted else frozenset())
    if isinstance(profile, dict) and isinstance(profile.get("PayloadContent"), list):
        for i, payload in enumerate(profile["PayloadContent"]):
            errors += validate_payload(payload, f"PayloadContent[{i}]")
    return errors


def payload_schema(ptype: str) -> dict:
    """The parsed schema file for a payload type (tests read supportedOS flags from it)."""
    return load_schema(ptype)
