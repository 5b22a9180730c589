"""Notice when a file changes, by polling its stat (no inotify dependency; works on
Kubernetes' symlink-swapped Secret and ConfigMap mounts, which inotify misses)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Signature = tuple[int, int, int] | None


def signature(path: Path) -> Signature:
    """What changes when the file is rewritten or replaced: inode, size, mtime."""
    try:
        st = os.stat(path)  # follows symlinks, so a swapped mount target counts
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def watch_file(path: Path, on_change: Callable[[], None], interval: float = 0.5) -> None:
    """Call `on_change` each time the file's signature changes (runs until cancelled)."""
    last = signature(path)
    while True:
        await asyncio.sleep(interval)
        current = signature(path)
        if current != last:
            last = current
            try:
                on_change()
            except Exception:  # a reload failure must not stop the watch
                log.exception("reloading %s failed", path)
