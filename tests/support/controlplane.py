"""Pytest plugin: a real kube-apiserver + etcd for the `controlplane` test tier.

The envtest approach (controller-runtime): the real API server and its real
storage, with no kubelet and no controllers, so CRD schemas, server-side apply,
status subresources, RBAC and watch semantics behave as in a cluster. The
binaries come from tests/controlplane/build.sh (pinned Go modules, built once
into a cache folder, or taken from KUBEBUILDER_ASSETS).

Fixtures: `control_plane` (session) and `namespace` (a fresh one per test).
Every test that uses them is marked `controlplane`, so `-m "not controlplane"`
skips the tier. When the binaries cannot be built, those tests fail with the
build's own message; they never skip silently.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient, ApiextensionsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from .pki import Pki, write_pki

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "controlplane" / "build.sh"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# The admin is in system:masters, the group RBAC's bootstrap policy binds to cluster-admin.
ADMIN_USER, ADMIN_GROUP = "localmodel-test-admin", "system:masters"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
TOKEN_LIFETIME_S = 4 * 3600


class ControlPlaneError(Exception):
    """The control plane could not be built or started; the message says why."""


# --- binaries ---------------------------------------------------------------


def build_binaries() -> dict[str, Path]:
    """Runs build.sh (a no-op once built) and returns {"kube-apiserver": path, "etcd": path}."""
    try:
        proc = subprocess.run(
            [str(BUILD_SCRIPT), "controlplane"], capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise ControlPlaneError(f"cannot run {BUILD_SCRIPT}: {exc}") from None
    if proc.returncode != 0:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT} failed (exit {proc.returncode}); kube-apiserver and etcd are built "
            f"from Go modules and need Go and the Go module proxy, or set KUBEBUILDER_ASSETS "
            f"to a folder holding both binaries.\n{_tail(proc.stderr)}"
        )
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    binaries = {name: Path(paths.get(name, "")) for name in ("kube-apiserver", "etcd")}
    for name, path in binaries.items():
        if not path.is_file():
            raise ControlPlaneError(f"{BUILD_SCRIPT} reported no usable {name} (got {path!s})")
    return binaries


# --- certificates and keys ----------------------------------------------------


# --- process arguments and kubeconfigs (pure) --------------------------------


def etcd_args(etcd: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd), f"--data-dir={data_dir}", "--name=default",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        # Test data is thrown away, so durability is not worth the fsync latency.
        "--unsafe-no-fsync=true", "--log-level=warn",
    ]


def apiserver_args(
    apiserver: Path, pki: Pki, etcd_url: str, port: int, cert_dir: Path
) -> list[str]:
    return [
        str(apiserver), "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={port}", f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}", f"--etcd-servers={etcd_url}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.sa_public_key}",
        f"--service-account-signing-key-file={pki.sa_signing_key}",
        "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
        # The `kubernetes` Service's endpoints cannot point at loopback, and no Pod reads them.
        "--endpoint-reconciler-type=none",
        # No controller-manager creates each namespace's `default` ServiceAccount,
        # so that admission check would refuse every Pod (envtest disables it too).
        "--disable-admission-plugins=ServiceAccount",
    ]


def kubeconfig(server: str, ca_pem: bytes, user: dict[str, str]) -> dict[str, Any]:
    """A single-context kubeconfig with the CA embedded, so the file stands alone."""
    name = "localmodel-test"
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode(),
        }}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
    }


def namespace_name(test_name: str) -> str:
    """A valid, unique namespace name that says which test made it."""
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:50].rstrip("-")
    return f"{stem or 'test'}-{secrets.token_hex(3)}"


# --- processes ------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    with contextlib.ExitStack() as stack:
        for sock in sockets:
            stack.enter_context(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _die_with_parent() -> None:
    """Runs in the child: the kernel kills it if pytest dies before its teardown."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


Processes = dict[str, tuple[subprocess.Popen[bytes], Path]]  # name -> (process, its log)


def _log_tail(log: Path) -> str:
    return _tail(log.read_text(errors="replace"))


def _wait_ready(url: str, context: ssl.SSLContext, procs: Processes) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        for name, (proc, log) in procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with status {proc.returncode} while starting:\n{_log_tail(log)}"
                )
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:  # HTTPError (503 while starting) included
            last_error = str(exc)
        time.sleep(0.1)
    logs = "\n".join(f"--- {name} log:\n{_log_tail(log)}" for name, (_, log) in procs.items())
    raise ControlPlaneError(f"{url} not ready after {READY_TIMEOUT_S:.0f}s ({last_error})\n{logs}")


# --- the handle ----------------------------------------------------------------


class ControlPlane:
    """A running kube-apiserver + etcd; clients authenticate as the admin or as a ServiceAccount."""

    def __init__(self, server: str, admin_kubeconfig: Path, ca_pem: bytes, workdir: Path) -> None:
        self.server = server
        self.admin_kubeconfig = admin_kubeconfig
        self._ca_pem = ca_pem
        self._workdir = workdir

    def api_client(self) -> ApiClient:
        """A new client acting as the cluster admin; close it (or use `with`) when done."""
        return kubernetes.config.new_client_from_config(config_file=str(self.admin_kubeconfig))

    def serviceaccount_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig with a TokenRequest token for ServiceAccount `name` (created if missing)."""
        with self.api_client() as api:
            core = CoreV1Api(api)
            account = {"metadata": {"name": name}}
            try:
                core.create_namespaced_service_account(namespace, account)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            request = {"spec": {"audiences": [], "expirationSeconds": TOKEN_LIFETIME_S}}
            token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        path = self._workdir / "kubeconfigs" / f"sa-{namespace}-{name}.yaml"
        config = kubeconfig(self.server, self._ca_pem, {"token": token})
        _write_private(path, yaml.safe_dump(config))
        return path


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


@contextlib.contextmanager
def running_control_plane(binaries: dict[str, Path]) -> Iterator[ControlPlane]:
    """Starts etcd + kube-apiserver in a temp dir and yields once /readyz answers; then stops
    both and deletes the dir."""
    workdir = Path(tempfile.mkdtemp(prefix="localmodel-controlplane-"))
    procs: Processes = {}
    try:
        pki = write_pki(workdir / "pki", ADMIN_USER, ADMIN_GROUP)
        etcd_port, peer_port, api_port = free_ports(3)
        for name, args in (
            ("etcd", etcd_args(binaries["etcd"], workdir / "etcd", etcd_port, peer_port)),
            ("kube-apiserver", apiserver_args(
                binaries["kube-apiserver"], pki, f"http://127.0.0.1:{etcd_port}", api_port,
                workdir / "certs",
            )),
        ):
            log = workdir / f"{name}.log"
            procs[name] = (_start(args, log), log)
        server = f"https://127.0.0.1:{api_port}"
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        _wait_ready(f"{server}/readyz", context, procs)
        ca_pem = pki.ca_cert.read_bytes()
        admin = workdir / "kubeconfigs" / "admin.yaml"
        _write_private(admin, yaml.safe_dump(kubeconfig(server, ca_pem, {
            "client-certificate-data": base64.b64encode(pki.admin_cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(pki.admin_key.read_bytes()).decode(),
        })))
        yield ControlPlane(server, admin, ca_pem, workdir)
    finally:
        # The apiserver first, so it does not log etcd errors while shutting down.
        for proc, _ in reversed(list(procs.values())):
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


LOCALMODEL_CRD = Path(__file__).resolve().parents[2] / "crds" / "localmodel.dev_localmodels.yaml"


def install_crd(api: ApiClient) -> None:
    """Creates (or replaces) the CRD and waits until the apiserver serves it."""
    crd = yaml.safe_load(LOCALMODEL_CRD.read_text())
    extensions = ApiextensionsV1Api(api)
    try:
        extensions.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = extensions.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = extensions.read_custom_resource_definition(crd["metadata"]["name"]).status
        if any(c.type == "Established" and c.status == "True" for c in (status.conditions or [])):
            return
        time.sleep(0.1)
    raise AssertionError("the LocalModel CRD never became Established")


# --- pytest wiring ---------------------------------------------------------------

_BINARIES = pytest.StashKey[dict[str, Path] | ControlPlaneError]()


def _uses_control_plane(item: pytest.Item) -> bool:
    return "control_plane" in getattr(item, "fixturenames", ())


def _binaries(config: pytest.Config) -> dict[str, Path]:
    if _BINARIES not in config.stash:
        try:
            config.stash[_BINARIES] = build_binaries()
        except ControlPlaneError as exc:
            config.stash[_BINARIES] = exc
    result = config.stash[_BINARIES]
    if isinstance(result, ControlPlaneError):
        raise result
    return result


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_control_plane(item):
            item.add_marker(pytest.mark.controlplane)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Builds the binaries before the first test, so the per-test timeout never cuts a first build."""
    if session.config.option.collectonly or not any(map(_uses_control_plane, session.items)):
        return
    started = time.monotonic()
    with contextlib.suppress(ControlPlaneError):  # the fixture reports it in each test that needs it
        _binaries(session.config)
    elapsed = time.monotonic() - started
    if elapsed > 5:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(f"controlplane: built kube-apiserver and etcd in {elapsed:.0f}s")


@pytest.fixture(scope="session")
def control_plane(pytestconfig: pytest.Config) -> Iterator[ControlPlane]:
    with contextlib.ExitStack() as stack:
        try:
            plane = stack.enter_context(running_control_plane(_binaries(pytestconfig)))
        except ControlPlaneError as exc:
            error = str(exc)
        else:
            yield plane
            return
    pytest.fail(f"control plane unavailable: {error}", pytrace=False)


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; with no namespace controller it stays Terminating after."""
    name = namespace_name(request.node.name)
    with control_plane.api_client() as api:
        core = CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})
        try:
            yield name
        finally:
            try:
                core.delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:  # a test may delete its namespace itself
                    raise
