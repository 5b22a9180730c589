"""Render the chart with the pinned helm CLI and pick objects out of the result.

The helm binary is built from the pinned Go module by tests/controlplane/build.sh
and cached with the control-plane binaries.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "localmodel"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CRD_FILE = ROOT / "crds" / "localmodel.dev_localmodels.yaml"
RULES_FILES = {"operator": CHART / "files" / "operator-rbac-rules.yaml",
               "router": CHART / "files" / "router-rbac-rules.yaml"}
BUILD_SCRIPT = ROOT / "tests" / "controlplane" / "build.sh"
RELEASE, RELEASE_NAMESPACE = "lm", "localmodel"
# The chart's object names for release "lm" (<release>-<chart>-<component>).
OPERATOR, ROUTER = "lm-localmodel-operator", "lm-localmodel-router"


class HelmUnavailable(Exception):
    """build.sh could not provide helm; the message says why."""


class HelmFailed(Exception):
    """helm exited non-zero; the message is its stderr."""


@functools.cache
def helm_binary() -> Path:
    proc = subprocess.run([str(BUILD_SCRIPT), "helm"], capture_output=True, text=True, check=False)
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    helm = Path(paths.get("helm", ""))
    if proc.returncode != 0 or not helm.is_file():
        raise HelmUnavailable(f"{BUILD_SCRIPT} helm failed (exit {proc.returncode}); helm is built from "
                              f"the pinned Go module and needs Go and the module proxy:\n{proc.stderr[-3000:]}")
    return helm


def run_helm(*args: str) -> str:
    """stdout of `helm <args>`; HelmFailed carries stderr without helm's symlink notices."""
    proc = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        notices = "found symbolic link in path"
        raise HelmFailed("\n".join(line for line in proc.stderr.splitlines() if notices not in line))
    return proc.stdout


def template_args(values: Sequence[Path] = (), sets: Sequence[str] = (), namespace: str = RELEASE_NAMESPACE,
                  release: str = RELEASE) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    return args


def render(values: Sequence[Path] = (), sets: Sequence[str] = (), namespace: str = RELEASE_NAMESPACE,
           release: str = RELEASE) -> list[dict[str, Any]]:
    """Every object `helm template` renders, in order."""
    text = run_helm(*template_args(values, sets, namespace, release))
    return [obj for obj in yaml.safe_load_all(text) if obj]


def of_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: Iterable[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name
             and (namespace is None or obj["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"expected one {kind} {namespace or ''}/{name}, found {len(found)}"
    return found[0]


def containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal env values (valueFrom entries left out)."""
    return {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}


def rules_file(component: str) -> list[dict[str, Any]]:
    return yaml.safe_load(RULES_FILES[component].read_text())
