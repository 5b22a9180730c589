"""Fixtures of the chart tests: the pinned helm CLI, built once and cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from .chart import HelmUnavailable, helm_binary


@pytest.fixture(scope="session", autouse=True)
def helm() -> Path:
    """Fails (never skips) every chart test when helm cannot be built."""
    try:
        return helm_binary()
    except HelmUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
