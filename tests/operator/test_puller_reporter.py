"""The puller's status reporter against the real apiserver, under exactly the Role the operator gives it.

The apiserver, unlike a stub, prunes fields the CRD's status schema lacks and
refuses what the Role does not allow, so this is where the puller's patches are
shown to land as the operator and `kubectl get lm` read them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient
from support.puller_gguf import write_gguf

from localmodel_operator import build_puller
from localmodel_operator.spec import LocalModel
from localmodel_server.puller import PullError, Reason
from localmodel_server.puller.gguf_info import read_gguf_info
from localmodel_server.puller.k8s_status import KubernetesStatusReporter, api_from_environment
from localmodel_server.puller.result import PullResult

from .cluster import Cluster, eventually
from .test_operator_integration import HF


def as_puller_of(cluster: Cluster, control_plane: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pull pod's identity: the operator's ServiceAccount, Role and RoleBinding for `name`."""
    model = LocalModel.from_body(cluster.model(name))
    cluster.core.create_namespaced_service_account(cluster.ns, build_puller.service_account(model))
    cluster.rbac.create_namespaced_role(cluster.ns, build_puller.role(model))
    cluster.rbac.create_namespaced_role_binding(cluster.ns, build_puller.role_binding(model))
    monkeypatch.setenv("KUBECONFIG", str(control_plane.serviceaccount_kubeconfig(cluster.ns, build_puller.meta.puller_name(name))))


@pytest.fixture
def cluster(admin: ApiClient, namespace: str) -> Cluster:
    return Cluster(admin, namespace)


def test_progress_then_success_land_in_status_as_the_crd_keeps_them(
    cluster: Cluster, control_plane: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cluster.create_model("tiny", {"source": HF})
    as_puller_of(cluster, control_plane, "tiny", monkeypatch)
    reporter = KubernetesStatusReporter(api_from_environment(), cluster.ns, "tiny", interval=0.05)
    reporter.progress(1 << 20, 4 << 20)

    def downloading() -> dict[str, Any]:
        download = cluster.model("tiny").get("status", {}).get("download") or {}
        assert download.get("bytesDone") == 1 << 20
        return download

    assert eventually(downloading) | {} == {"bytesDone": 1 << 20, "bytesTotal": 4 << 20, "percent": 25}

    path = write_gguf(tmp_path / "model.gguf")
    size = path.stat().st_size
    info = read_gguf_info(path)
    reporter.succeeded(PullResult(str(path), size, "ab" * 32, info, size, "downloaded"))
    status = cluster.model("tiny")["status"]
    assert status["download"]["result"] == "Succeeded" and status["download"]["sha256"] == "ab" * 32
    assert status["download"]["percent"] == 100
    # Every field the puller sends survives the CRD's pruning.
    assert status["gguf"] == {k: v for k, v in info.to_status().items() if v is not None}


def test_a_failure_is_reported_and_another_models_status_is_refused(
    cluster: Cluster, control_plane: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.create_model("mine", {"source": HF})
    cluster.create_model("theirs", {"source": HF})
    as_puller_of(cluster, control_plane, "mine", monkeypatch)
    api = api_from_environment()

    KubernetesStatusReporter(api, cluster.ns, "mine", interval=0.05).failed(
        PullError(Reason.CHECKSUM_MISMATCH, "sha256 of the download is not the expected one"))
    download = cluster.model("mine")["status"]["download"]
    assert (download["result"], download["reason"]) == ("Failed", "ChecksumMismatch")

    with caplog.at_level(logging.WARNING, logger="localmodel_server.puller.k8s_status"):
        KubernetesStatusReporter(api, cluster.ns, "theirs", interval=0.05).failed(PullError(Reason.NETWORK_ERROR, "x"))
    assert "cannot update" in caplog.text and "Forbidden" in caplog.text
    assert "download" not in (cluster.model("theirs").get("status") or {})
