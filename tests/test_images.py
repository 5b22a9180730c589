"""The image builds get every file they need: checked here, since no Docker engine runs in CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile.server", "Dockerfile.operator"]


def context_entries() -> set[str]:
    """What .dockerignore lets into the build context (it ignores `*`, then re-includes)."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in lines, ".dockerignore is expected to start from '*' and re-include"
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


def copied(dockerfile: str) -> set[str]:
    sources = set()
    for line in (ROOT / dockerfile).read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources.update(part.rstrip("/") for part in line.split()[1:-1])
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copied_path_is_in_the_build_context(dockerfile):
    assert copied(dockerfile) <= context_entries()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_links_in_copied_folders_point_at_copied_paths(dockerfile):
    sources = copied(dockerfile)
    for source in sources:
        for path in (ROOT / source).rglob("*") if (ROOT / source).is_dir() else []:
            if path.is_symlink():
                target = path.resolve().relative_to(ROOT)
                assert target.parts[0] in sources, f"{path.relative_to(ROOT)} -> {target}: not copied by {dockerfile}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_run_as_non_root(dockerfile):
    users = re.findall(r"^USER\s+(\S+)", (ROOT / dockerfile).read_text(), re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0")
