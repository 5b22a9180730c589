"""Two operator replicas never both act: a Lease elects one; the other takes over when it goes."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import CoordinationV1Api

from localmodel_operator.leader import claim

from .cluster import Cluster, eventually

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
HF = {"hf": {"repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "quant": "Q4_K_M"}}


def lease(holder: str, renewed: datetime.datetime, transitions: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": "l", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "leaseTransitions": transitions}}


def test_claim_creates_a_missing_lease() -> None:
    wanted = claim(None, "ns", "l", "a", NOW, 15)
    assert wanted is not None
    assert wanted["spec"]["holderIdentity"] == "a"
    assert wanted["spec"]["leaseTransitions"] == 0


def test_claim_renews_its_own_lease_and_keeps_the_resource_version() -> None:
    wanted = claim(lease("a", NOW - datetime.timedelta(seconds=10)), "ns", "l", "a", NOW, 15)
    assert wanted is not None
    assert wanted["metadata"]["resourceVersion"] == "7"  # an optimistic-concurrency write
    assert wanted["spec"]["renewTime"].startswith("2030-01-01T00:00:00")
    assert wanted["spec"]["leaseTransitions"] == 0


def test_claim_waits_for_a_live_holder_and_takes_over_an_expired_one() -> None:
    assert claim(lease("b", NOW - datetime.timedelta(seconds=5)), "ns", "l", "a", NOW, 15) is None
    taken = claim(lease("b", NOW - datetime.timedelta(seconds=20), transitions=2), "ns", "l", "a", NOW, 15)
    assert taken is not None
    assert (taken["spec"]["holderIdentity"], taken["spec"]["leaseTransitions"]) == ("a", 3)
    released = {"metadata": {}, "spec": {"holderIdentity": None, "renewTime": None}}
    assert claim(released, "ns", "l", "a", NOW, 15) is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def start_replica(operator_env: Path, namespace: str, tmp_path: Path) -> Iterator[Any]:
    """`localmodel-operator` processes, as a Deployment with two replicas would run them."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(identity: str, prelude: str = "") -> tuple[subprocess.Popen[bytes], int]:
        port = _free_port()
        env = {**os.environ, "LOCALMODEL_IDENTITY": identity, "LOCALMODEL_NAMESPACES": namespace,
               "LOCALMODEL_LEASE_NAMESPACE": namespace, "LOCALMODEL_LEASE_DURATION_S": "6",
               "LOCALMODEL_HEALTH_PORT": str(port)}
        log = (tmp_path / f"{identity}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-c", f"{prelude}from localmodel_operator.main import main; main()"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc, port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _holder(cluster: Cluster) -> str:
    spec = CoordinationV1Api(cluster.api).read_namespaced_lease("localmodel-operator", cluster.ns).spec
    assert spec.holder_identity, "no holder yet"
    return spec.holder_identity


def _healthy(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        assert response.status == 200


def test_one_replica_leads_and_the_other_takes_over_when_it_stops(
    admin: Any, namespace: str, start_replica: Any, tmp_path: Path
) -> None:
    cluster = Cluster(admin, namespace)
    first, first_port = start_replica("replica-a")
    eventually(lambda: _assert_holder(cluster, "replica-a"), timeout=60)
    second, second_port = start_replica("replica-b")
    eventually(lambda: _healthy(second_port), timeout=30)  # the standby answers its liveness probe
    eventually(lambda: _healthy(first_port))

    cluster.create_model("led", {"source": HF})
    eventually(lambda: cluster.only_job("led"), timeout=30)
    assert _holder(cluster) == "replica-a"
    standby_log = (tmp_path / "replica-b.log").read_text()
    assert "waiting for the Lease" in standby_log and "Handler" not in standby_log  # b has not acted

    first.send_signal(signal.SIGTERM)  # a rolling update stops the leader
    assert first.wait(30) == 0, (tmp_path / "replica-a.log").read_text()
    eventually(lambda: _assert_holder(cluster, "replica-b"), timeout=30)
    cluster.create_model("after", {"source": HF})
    eventually(lambda: cluster.only_job("after"), timeout=30)
    assert len(cluster.jobs("led")) == 1
    assert second.poll() is None


def _assert_holder(cluster: Cluster, identity: str) -> None:
    assert _holder(cluster) == identity


# What a pod running as a uid with no /etc/passwd entry sees (the chart runs as 65532):
# no login name in the environment and no user for the uid.
NO_PASSWD_ENTRY = (
    "import os, pwd\n"
    "for name in ('LOGNAME', 'USER', 'LNAME', 'USERNAME'): os.environ.pop(name, None)\n"
    "def getpwuid(uid): raise KeyError(f'getpwuid(): uid not found: {uid}')\n"
    "pwd.getpwuid = getpwuid\n"
)


def test_an_operator_whose_uid_has_no_passwd_entry_still_leads_and_acts(
    admin: Any, namespace: str, start_replica: Any, tmp_path: Path
) -> None:
    cluster = Cluster(admin, namespace)
    proc, _ = start_replica("nobody-65532", prelude=NO_PASSWD_ENTRY)
    eventually(lambda: _assert_holder(cluster, "nobody-65532"), timeout=60)
    cluster.create_model("anyone", {"source": HF})
    eventually(lambda: cluster.only_job("anyone"), timeout=30)
    assert proc.poll() is None, (tmp_path / "nobody-65532.log").read_text()
