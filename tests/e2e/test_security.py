"""End to end: the security defaults, observed on the live pods and the live RBAC."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.cluster import MODELS_NS, RELEASE, kubectl, kubectl_json

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def running_pods(namespace: str) -> list[dict[str, Any]]:
    pods = kubectl_json("get", "pods", "-n", namespace, "--field-selector=status.phase=Running")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def test_every_container_runs_as_non_root_on_a_read_only_root(
    installed: tuple[str, str], models: dict[str, Any],
) -> None:
    release_ns, _ = installed
    checked = []
    for namespace in (release_ns, MODELS_NS):
        for pod in running_pods(namespace):
            for container in pod["spec"]["containers"]:
                name = pod["metadata"]["name"]
                exec_ = ("exec", "-n", namespace, name, "-c", container["name"], "--")
                uid = kubectl(*exec_, "python3", "-c", "import os; print(os.getuid())").strip()
                assert uid != "0", f"{name}/{container['name']} runs as root"
                probe = kubectl(*exec_, "python3", "-c",
                                "import errno\ntry:\n open('/probe', 'w')\nexcept OSError as e:\n print(errno.errorcode[e.errno])")
                assert probe.strip() in ("EROFS", "EACCES"), f"{name}/{container['name']} can write /: {probe!r}"
                checked.append(f"{name}/{container['name']}")
    assert any("router" in c for c in checked) and any("operator" in c for c in checked), checked
    assert any(c.startswith("lm-") for c in checked), checked


@pytest.mark.parametrize(("verb", "resource", "allowed"), [
    ("list", "localmodels.localmodel.dev", "yes"),
    ("list", "endpointslices.discovery.k8s.io", "yes"),
    ("get", "secrets", "no"),
    ("list", "secrets", "no"),
    ("create", "pods", "no"),
])
def test_the_routers_service_account_reads_routes_and_no_secret(
    installed: tuple[str, str], verb: str, resource: str, allowed: str,
) -> None:
    release_ns, _ = installed
    account = f"system:serviceaccount:{release_ns}:{RELEASE}-router"
    answer = kubectl("auth", "can-i", verb, resource, "-n", MODELS_NS, f"--as={account}", check=False).strip()
    assert answer == allowed, f"{account} {verb} {resource}: {answer}"
