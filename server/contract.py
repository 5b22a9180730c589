"""The contract every component shares: the LocalModel API, the names of its children, its phases.

The operator writes these names and phases, the router and the puller read
them, and single-machine mode mirrors them. This module is the only place
they are spelled; everyone imports it, so the components cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum

API_GROUP = "localmodel.dev"
VERSION = "v1alpha1"
API_VERSION = f"{API_GROUP}/{VERSION}"
KIND = "LocalModel"
PLURAL = "localmodels"

# Every child of a LocalModel is named with this prefix: the Service `lm-<name>`
# is how the router finds a model's endpoints.
NAME_PREFIX = "lm-"
# On every child, and copied onto EndpointSlices from the Service.
MODEL_LABEL = f"{API_GROUP}/model"


class Phase(StrEnum):
    """status.phase of a LocalModel."""

    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    LOADING = "Loading"
    READY = "Ready"
    FAILED = "Failed"


def service_name(model: str) -> str:
    """The stable address of a model's server pods."""
    return f"{NAME_PREFIX}{model}"


def human_bytes(size: float) -> str:
    """1536 → '1.5 KiB': sizes in status, Events and the CLI read the same everywhere."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
