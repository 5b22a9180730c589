"""The install layout: every source package ships, and `operator/` never shadows the standard library."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    to_import = {folder: name for name, folder in config["package-dir"].items()}
    found = set()
    for init in sorted((ROOT / "server").rglob("__init__.py")) + sorted((ROOT / "operator").rglob("__init__.py")):
        folder = init.parent.relative_to(ROOT)
        top, *rest = folder.parts
        found.add(".".join([to_import[top], *rest]))
    assert found == set(config["packages"])


def test_operator_folder_does_not_shadow_the_stdlib_module():
    # Run from the repository root, where a bare `operator/` would be importable.
    probe = "import operator, localmodel_operator; print(operator.__file__); print(localmodel_operator.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    stdlib, ours = out.splitlines()
    assert not stdlib.startswith(str(ROOT)), stdlib
    assert ours.startswith(str(ROOT / "operator")), ours


def test_the_crd_link_for_single_machine_mode_points_at_crds():
    link = ROOT / "server" / "local" / "crd" / "localmodel.dev_localmodels.yaml"
    assert link.resolve() == (ROOT / "crds" / "localmodel.dev_localmodels.yaml").resolve()
