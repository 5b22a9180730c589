"""The contract every component shares: the LocalModel API, the names of its children, its phases.

The operator writes these names and phases, the router and the puller read
them, and single-machine mode mirrors them. This module is the only place
they are spelled; everyone imports it, so the components cannot drift apart.
"""

from __future__ import annotations

import re
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

# spec.source's kinds, exactly one per source; the registry kinds are fetched from an
# OCI-distribution registry and take a .dockerconfigjson Secret as credentials.
SOURCE_KINDS = ("hf", "url", "s3", "pvc", "ollama", "oci")
REGISTRY_SOURCE_KINDS = ("ollama", "oci")


# localmodel-pull's exit codes, which the pull Job's podFailurePolicy reads. A reported
# failure (bad credentials, a checksum mismatch, no space) will not change on retry, so it
# fails the Job at once; anything else, a crash included, is retried up to the backoff limit.
# 1 is Python's own exit after an uncaught exception and 2 is argparse's, hence 3.
PULL_REPORTED_FAILURE_EXIT_CODE = 3
PULL_CRASHED_EXIT_CODE = 1


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


# spec.keepAlive, read by the operator (scale to zero) and by single-machine mode
# (unload), in Ollama's keep_alive syntax; the CRD's pattern admits the same strings.
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def parse_keep_alive(text: str) -> float | None:
    """Seconds idle before unloading, or None for never, from Ollama's keep_alive syntax.

    `30s`, `10m`, `1h30m`, `250ms`; a bare number is seconds; `0` unloads after each
    request; any negative value (Ollama documents `-1`) keeps the model loaded.
    """
    value = text.strip()
    if value.startswith("-") and (value[1:].replace(".", "", 1).isdigit() or _DURATION.fullmatch(value[1:])):
        return None
    if value.replace(".", "", 1).isdigit():
        return float(value)
    if _DURATION.fullmatch(value):
        return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(value))
    raise ValueError(f"keep-alive {text!r} is not a duration: use e.g. 30s, 10m, 1h, 0 (unload after each request) "
                     "or -1 (never unload)")
