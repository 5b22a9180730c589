"""Model server configuration: every flag is also a LOCALMODEL_* environment variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOCALMODEL_",
        cli_parse_args=False,
        cli_kebab_case=True,
        cli_prog_name="localmodel-server",
        cli_implicit_flags=True,
        protected_namespaces=(),
    )

    model_path: Path = Field(description="GGUF file to serve.")
    served_name: str | None = Field(None, description="Model id clients send in 'model' (default: the file stem).")
    aliases: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Other accepted model ids.")
    context_size: int | None = Field(
        None, ge=16, description="Tokens per request, prompt plus completion (default: trained length, at most 4096)."
    )
    parallel: int = Field(4, ge=1, le=256, description="Requests decoded together (slots).")
    queue_size: int = Field(
        512, ge=0, description="Requests waiting for a slot before new ones get 503 (Ollama's default too; "
        "a waiting request holds only its body and tokens).",
    )
    batch_size: int = Field(
        512, ge=32, description="Most tokens evaluated in one decode step; raised to --parallel when smaller, "
        "since every generating slot adds a token to each step.",
    )
    threads: int = Field(os.cpu_count() or 1, ge=1, description="CPU threads (default: every core).")
    gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU; -1 offloads all.")
    weight_repacking: bool = Field(
        False, description="Let llama.cpp repack quantized CPU weights for its AMX/AVX-512 kernels. Off by "
        "default: on AMX CPUs those kernels crashed decoding several sequences in one batch.",
    )
    drain_timeout: float = Field(30.0, ge=0, description="Seconds in-flight requests may finish after SIGTERM.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    host: str = Field("0.0.0.0", description="Listen address.")
    port: int = Field(8000, ge=0, le=65535, description="Listen port.")

    @field_validator("aliases", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # LOCALMODEL_ALIASES=a,b is friendlier than JSON in a manifest.
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @property
    def model_id(self) -> str:
        return self.served_name or self.model_path.stem

    @property
    def accepted_names(self) -> set[str]:
        return {self.model_id, *self.aliases}
