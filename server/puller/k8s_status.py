"""Report pull progress into the LocalModel's status subresource.

The puller owns exactly `status.download` and `status.gguf` (merge patches of
the status subresource, so the operator's fields are untouched). A probe
(`--probe`) reports only `download.bytesTotal`, with no result. A background
thread sends the latest progress every `interval` seconds, so the status moves
even while a block is slow; the final patch is sent synchronously. A failed
progress patch is logged and skipped: reporting must never fail a download.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .. import contract
from .errors import PullError
from .progress import download_status, failure_status, probe_status, success_status
from .result import PullResult

log = logging.getLogger(__name__)

_FINAL_PATCH_ATTEMPTS = 3


def parse_target(text: str) -> tuple[str, str]:
    """`<namespace>/<name>` → (namespace, name)."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"--report-to must be <namespace>/<name>, got {text!r}")
    return namespace, name


def api_from_environment() -> client.CustomObjectsApi:
    """In-cluster ServiceAccount config in a pod; KUBECONFIG (or ~/.kube/config) elsewhere.

    A private Configuration, so the process-wide kubernetes client default is left alone.
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        # Read now: the kubernetes package captures KUBECONFIG at import time.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    return client.CustomObjectsApi(client.ApiClient(configuration))


class KubernetesStatusReporter:
    def __init__(self, api: client.CustomObjectsApi, namespace: str, name: str, interval: float = 5.0) -> None:
        self._api = api
        self._namespace = namespace
        self._name = name
        self._interval = interval
        self._lock = threading.Lock()
        self._latest: tuple[int, int | None] = (0, None)
        self._sent: tuple[int, int | None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="status-reporter", daemon=True)
        self._thread.start()

    def progress(self, done: int, total: int | None) -> None:
        with self._lock:
            self._latest = (done, total)

    def succeeded(self, result: PullResult) -> None:
        self._finish(success_status(result))

    def probed(self, total: int | None) -> None:
        self._finish(probe_status(total))

    def failed(self, error: PullError) -> None:
        with self._lock:
            done, total = self._latest
        self._finish(failure_status(error, done, total))

    def _heartbeat(self) -> None:
        clear_gguf = True  # a new pull: the previous model's metadata no longer applies
        while True:
            with self._lock:
                latest = self._latest
            if latest != self._sent:
                status: dict[str, Any] = {"download": download_status(*latest)}
                if clear_gguf:
                    status["gguf"] = None
                if self._patch(status, log_level=logging.WARNING):
                    self._sent, clear_gguf = latest, False
            if self._stop.wait(self._interval):
                return

    def _finish(self, status: dict[str, Any]) -> None:
        self._stop.set()
        self._thread.join()
        for _ in range(_FINAL_PATCH_ATTEMPTS):
            if self._patch(status, log_level=logging.ERROR):
                return

    def _patch(self, status: dict[str, Any], log_level: int) -> bool:
        try:
            self._api.patch_namespaced_custom_object_status(
                contract.API_GROUP, contract.VERSION, self._namespace, contract.PLURAL, self._name, {"status": status}
            )
            return True
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as err:
            reason = err.reason if isinstance(err, ApiException) else type(err).__name__
            log.log(log_level, "cannot update %s/%s status: %s", self._namespace, self._name, reason)
            return False
