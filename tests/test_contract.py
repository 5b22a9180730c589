"""The contract between components is spelled once (server/contract.py) and matches the CRD."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from localmodel_server import contract

ROOT = Path(__file__).resolve().parents[1]
# Literals that belong to the contract: the API's group/version and plural, the child-name
# prefix and the model label. Anywhere else in the code they would be a copy that can drift.
CONTRACT_LITERALS = re.compile(r"""(?<!Path\()["'](localmodel\.dev/v1alpha1|localmodel\.dev|v1alpha1|localmodels|lm-|localmodel\.dev/model)["']|f["']lm-""")


def test_the_crd_is_the_contract():
    crd = yaml.safe_load((ROOT / "crds" / "localmodel.dev_localmodels.yaml").read_text())
    spec = crd["spec"]
    assert spec["group"] == contract.API_GROUP
    assert spec["names"]["plural"] == contract.PLURAL
    assert spec["names"]["kind"] == contract.KIND
    assert [v["name"] for v in spec["versions"]] == [contract.VERSION]
    phases = spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]
    assert phases["enum"] == [str(p) for p in contract.Phase]


def test_no_component_spells_the_contract_itself():
    copies = []
    for path in sorted((ROOT / "server").rglob("*.py")) + sorted((ROOT / "operator").rglob("*.py")):
        if path == ROOT / "server" / "contract.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if CONTRACT_LITERALS.search(line):
                copies.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not copies, "import these from localmodel_server.contract:\n" + "\n".join(copies)


def test_human_bytes():
    assert contract.human_bytes(0) == "0 B"
    assert contract.human_bytes(1536) == "1.5 KiB"
    assert contract.human_bytes(5 * 1024**3) == "5.0 GiB"
    assert contract.human_bytes(3 * 1024**4) == "3.0 TiB"
