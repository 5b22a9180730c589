"""Where single-machine mode keeps weights, volumes, secrets and its run state."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


@dataclass(frozen=True)
class Layout:
    cache: Path  # pulled weights and default volumes
    config: Path  # secrets

    @classmethod
    def default(cls, cache: Path | None = None) -> Layout:
        return cls(
            cache=cache or Path(os.environ.get("LOCALMODEL_CACHE_DIR") or _xdg("XDG_CACHE_HOME", ".cache") / "localmodel"),
            config=Path(os.environ.get("LOCALMODEL_CONFIG_DIR") or _xdg("XDG_CONFIG_HOME", ".config") / "localmodel"),
        )

    def model_dir(self, namespace: str, name: str) -> Path:
        """Where a downloaded model lives: `model.gguf` and its marker, as in the model's PVC."""
        return self.cache / "models" / namespace / name

    def volume_dir(self, claim: str) -> Path:
        """A `pvc` source's claim is a directory on this machine."""
        return self.cache / "volumes" / claim

    def secret_file(self, name: str) -> Path:
        """A Secret is a dotenv file: KEY=value lines, as a Secret's data keys."""
        return self.config / "secrets" / f"{name}.env"

    @property
    def run(self) -> Path:
        return self.cache / "run"

    @property
    def state_file(self) -> Path:
        return self.run / "up.json"

    @property
    def logs(self) -> Path:
        return self.run / "logs"
