"""`localmodel up` as a user runs it, for tests: a subprocess with its own cache dir and log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import yaml

from support.model_server import free_port, wait_for


def manifest(name: str, source: dict, **spec: object) -> str:
    return yaml.safe_dump({"apiVersion": "localmodel.dev/v1alpha1", "kind": "LocalModel",
                           "metadata": {"name": name}, "spec": {"source": source, **spec}})


def pvc(path: str) -> dict:
    return {"pvc": {"claimName": "models", "path": path}}


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not yet exited (a zombie has: only its parent's wait is left)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Up:
    """A running `localmodel up`, with its cache dir and output."""

    def __init__(self, tmp: Path, paths: list[Path], *extra: str, volume: Path | None = None) -> None:
        self.cache = tmp / "cache"
        self.port = free_port()
        self.log = tmp / f"up-{self.port}.log"
        args = [sys.executable, "-m", "localmodel_server.local.cli", "--cache-dir", str(self.cache), "up",
                *map(str, paths), "--port", str(self.port), "--drain-timeout", "5", *extra]
        if volume is not None:
            args += ["--volume", f"models={volume}"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self, timeout: float = 120) -> dict:
        assert wait_for(lambda: "serving http://" in self.output() or self.proc.poll() is not None, timeout), self.output()
        assert self.proc.poll() is None, self.output()
        return json.loads((self.cache / "run" / "up.json").read_text())

    def state(self) -> dict:
        return json.loads((self.cache / "run" / "up.json").read_text())

    def servers(self) -> dict[str, int]:
        """The model servers running now: --served-name -> pid, from the process table.

        A server in the middle of exiting has already lost its command line and is not listed, though
        its pid lives on for a moment: to see that one gone, wait until `alive(pid)` is false.
        """
        found = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = child.cmdline()
            except psutil.Error:
                continue
            if "localmodel_server.main" in cmd and alive(child.pid):
                found[cmd[cmd.index("--served-name") + 1]] = child.pid
        return found

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(60)
