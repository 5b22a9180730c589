"""Hash received blocks as they arrive and append them to the partial file on a second thread.

Socket reads, SHA-256 and file writes all release the GIL. The caller's thread
reads a block and hashes it while it is still in that core's cache; a writer
thread copies it into the page cache meanwhile. Measured on loopback
(docs/benchmarks.md), this split beat hashing on the writer thread (which then
became the bottleneck) and a three-thread pipeline (more handoffs).
Blocks come from a small fixed pool, so memory stays at pool × block size;
1 MiB blocks stay in L2 between read, hash and write, where 4 MiB blocks
measured about twice the CPU per byte.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from .store import sha256_of_prefix

BLOCK_SIZE = 1 << 20
_POOL_BLOCKS = 4


class DiskWriteError(Exception):
    """Writing the partial file failed (full volume, I/O error): not a network problem."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class HashingWriter:
    """Appends to `path` (which already holds `offset` valid bytes) and keeps its sha256."""

    def __init__(self, path: Path, offset: int) -> None:
        self._digest = sha256_of_prefix(path, offset)
        self._fd = os.open(path, os.O_WRONLY)
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        self.offset = offset  # bytes written and hashed
        self.received = 0  # bytes written by this process, across restarts of the partial
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(_POOL_BLOCKS):
            self._free.put(bytearray(BLOCK_SIZE))
        self._work: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="puller-writer", daemon=True)
        self._thread.start()

    def fill(self, read_into: Callable[[memoryview], int]) -> int:
        """Fill one pooled block with `read_into` and queue it; returns the byte count (0 at EOF)."""
        self._raise_pending()
        block = self._free.get()
        try:
            n = read_into(memoryview(block))
        except BaseException:
            self._free.put(block)
            raise
        if n:
            self._digest.update(memoryview(block)[:n])  # while the block is still in this core's cache
            self._work.put((block, n))
        else:
            self._free.put(block)
        return n

    def drain(self) -> int:
        """Wait until every queued block is on disk and hashed; returns the file offset."""
        self._work.join()
        self._raise_pending()
        return self.offset

    def reset(self) -> None:
        """Start over at offset 0 (the partial file was truncated by its owner)."""
        self.drain()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._digest = hashlib.sha256()
        self.offset = 0

    def hexdigest(self) -> str:
        self.drain()
        return self._digest.hexdigest()

    def close(self) -> None:
        self._work.put(None)
        self._thread.join()
        os.close(self._fd)

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            block, n = item
            try:
                if self._error is None:
                    view = memoryview(block)[:n]
                    _write_all(self._fd, view)
                    self.offset += n
                    self.received += n
            except OSError as err:
                self._error = err
            finally:
                self._free.put(block)
                self._work.task_done()
        self._work.task_done()

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise DiskWriteError(self._error)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]
