"""Read LocalModel manifests from files and directories, validated as the apiserver would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from localmodel_operator.spec import LocalModel

from .. import contract
from .layout import Layout
from .schema import validate

KIND = (contract.API_VERSION, contract.KIND)


class ManifestError(Exception):
    """A manifest that cannot be served; the message names the file and the field."""


@dataclass(frozen=True)
class Manifest:
    path: Path
    body: dict[str, Any]
    model: LocalModel

    @property
    def key(self) -> str:
        return f"{self.model.namespace}/{self.model.name}"

    @property
    def source(self) -> dict[str, Any]:
        return self.body["spec"]["source"]


def load(paths: list[Path]) -> list[Manifest]:
    """Every LocalModel in the given files and directories (*.yaml, *.yml, *.json), in order."""
    manifests: list[Manifest] = []
    for file in _files(paths):
        try:
            docs = list(yaml.safe_load_all(file.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise ManifestError(f"{file}: cannot be read as YAML: {exc}") from None
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict) or (doc.get("apiVersion"), doc.get("kind")) != KIND:
                continue  # other kinds (Secrets, Namespaces) may share the file, as with kubectl
            manifests.append(_parse(file, index, doc))
    if not manifests:
        raise ManifestError(f"no LocalModel manifests (apiVersion {KIND[0]}, kind {KIND[1]}) in: "
                            + ", ".join(str(p) for p in paths))
    _reject_duplicates(manifests)
    return manifests


def _files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")))
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return files


def _parse(file: Path, index: int, doc: dict[str, Any]) -> Manifest:
    doc.setdefault("metadata", {}).setdefault("namespace", "default")
    name = doc["metadata"].get("name") or f"document {index + 1}"
    violations = validate(doc)
    if violations:
        details = "\n".join(f"  - {v}" for v in violations)
        raise ManifestError(f"{file}: LocalModel '{name}' is invalid:\n{details}")
    return Manifest(path=file, body=doc, model=LocalModel.from_body(doc))


def _reject_duplicates(manifests: list[Manifest]) -> None:
    seen: dict[str, Manifest] = {}
    for m in manifests:
        for model_id in (m.model.spec.served_name, *m.model.spec.aliases):
            if model_id in seen:
                other = seen[model_id]
                raise ManifestError(f"{m.path}: '{model_id}' is already served by LocalModel "
                                    f"'{other.model.name}' ({other.path})")
            seen[model_id] = m


def secret_env(manifest: Manifest, layout: Layout) -> dict[str, str]:
    """The Secret named by source.secretRef, as environment variables (as the pull Job's envFrom)."""
    name = manifest.model.spec.source.secret_name
    if name is None:
        return {}
    file = layout.secret_file(name)
    if not file.is_file():
        raise ManifestError(
            f"{manifest.path}: LocalModel '{manifest.model.name}' needs the Secret '{name}' "
            f"(source.secretRef). Create {file} with KEY=value lines, e.g. HF_TOKEN=... or "
            "AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=..."
        )
    return {k: v for k, v in dotenv_values(file).items() if v is not None}


def source_json(manifest: Manifest) -> str:
    return json.dumps(manifest.model.spec.source.canonical(), sort_keys=True)
