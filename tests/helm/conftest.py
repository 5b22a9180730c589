"""Fixtures of the chart tests: the pinned helm CLI, and the CRDs in the test apiserver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient

from .chart import HelmUnavailable, helm_binary, one, render
from .kube import CRD_NAME, apply, established

# Third-party CRDs the chart's options use (the ServiceMonitor), see crds/README.md.
THIRD_PARTY_CRDS = sorted((Path(__file__).parent / "crds").glob("*.yaml"))


@pytest.fixture(scope="session", autouse=True)
def helm() -> Path:
    """Fails (never skips) every chart test when helm cannot be built."""
    try:
        return helm_binary()
    except HelmUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def api(control_plane: Any) -> Iterator[ApiClient]:
    with control_plane.api_client() as client:
        yield client


@pytest.fixture(scope="module")
def dynamic(api: ApiClient) -> DynamicClient:
    """An admin client, after the chart's LocalModel CRD (as rendered) and the third-party CRDs are applied."""
    client = DynamicClient(api)
    chart_crd = one(render(), "CustomResourceDefinition", CRD_NAME)
    for crd in [chart_crd, *(yaml.safe_load(path.read_text()) for path in THIRD_PARTY_CRDS)]:
        apply(client, crd, dry_run=False)
        established(api, crd["metadata"]["name"])
    client.resources.invalidate_cache()  # discovery must see the new kinds
    return client
