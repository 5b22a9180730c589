"""Validate LocalModel manifests exactly as the apiserver does: the CRD's schema and its CEL rules.

Single-machine mode has no apiserver, so it reads the same CRD file the
cluster installs and checks a manifest against its openAPIV3Schema (types,
enums, patterns, bounds) and every `x-kubernetes-validations` rule, with
`self` bound the way Kubernetes binds it. A manifest that this accepts is one
`kubectl apply` accepts, and the messages are the CRD's own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import celpy
import jsonschema
import yaml

CRD_FILE = "localmodel.dev_localmodels.yaml"


@dataclass(frozen=True)
class Violation:
    path: str  # e.g. "spec.source.url"; "" for the object itself
    message: str

    def __str__(self) -> str:
        return f"{self.path or 'the object'}: {self.message}"


@functools.cache
def crd_schema() -> dict[str, Any]:
    text = resources.files("localmodel_server.local").joinpath("crd", CRD_FILE).read_text()
    crd = yaml.safe_load(text)
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version["schema"]["openAPIV3Schema"]


def validate(body: dict[str, Any]) -> list[Violation]:
    schema = crd_schema()
    structural = sorted(jsonschema.Draft7Validator(schema).iter_errors(body), key=lambda e: list(e.path))
    violations = [Violation(_dotted(e.absolute_path), e.message) for e in structural]
    if violations:
        return violations  # CEL rules assume a structurally valid object, as in the apiserver
    return list(_cel_violations(schema, body, ""))


def _cel_violations(schema: dict[str, Any], value: Any, path: str):
    for rule in schema.get("x-kubernetes-validations", ()):
        outcome = _evaluate(rule["rule"], value)
        if outcome is not True:
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            if isinstance(outcome, Exception):
                message = f"{message} (the rule could not be evaluated: {outcome})"
            yield Violation(path, message)
    if isinstance(value, dict):
        for key, child in (schema.get("properties") or {}).items():
            if key in value:
                yield from _cel_violations(child, value[key], _join(path, key))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                yield from _cel_violations(extra, item, _join(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _cel_violations(schema["items"], item, f"{path}[{index}]")


def _evaluate(rule: str, value: Any) -> bool | Exception:
    try:
        result = _program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except Exception as exc:  # celpy raises its own error types for runtime failures
        return exc
    return bool(result) if isinstance(result, (bool, celpy.celtypes.BoolType)) else RuntimeError(str(result))


@functools.cache
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _dotted(parts) -> str:
    out = ""
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, str(part))
    return out
