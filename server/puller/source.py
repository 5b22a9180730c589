"""The LocalModel `spec.source` as typed, validated objects.

The CRD validates the same rules at admission; they are repeated here because
the single-machine mode builds sources without an apiserver, and because a
file name or path reaches the filesystem and must never escape the volume.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..contract import SOURCE_KINDS
from .oci_names import Reference, parse_ollama_name, parse_oci_ref

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class SourceError(ValueError):
    """The source object is malformed; the message says which field and why."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _http_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an http:// or https:// URL with a host")
    return value


def redact_url(url: str) -> str:
    """scheme://host/path: user info and query strings may carry credentials."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class HfSource(_Spec):
    repo: str = Field(description="owner/name of a Hugging Face model repository")
    file: str | None = Field(None, description="exact .gguf file name in the repository")
    quant: str | None = Field(None, description="quantization tag, e.g. Q4_K_M, picking the one .gguf carrying it")
    revision: str = Field("main", min_length=1, description="branch, tag or commit")

    @field_validator("repo")
    @classmethod
    def _repo_shape(cls, value: str) -> str:
        if not _REPO.match(value) or ".." in value:
            raise ValueError("repo must look like owner/name")
        return value

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or ".." in value or not value.strip()):
            raise ValueError("file must be a plain file name without '/' or '..'")
        return value

    @field_validator("quant")
    @classmethod
    def _quant_tag(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_]+", value):
            raise ValueError("quant must be a tag such as Q4_K_M (letters, digits, '_')")
        return value

    @model_validator(mode="after")
    def _file_or_quant(self) -> HfSource:
        if (self.file is None) == (self.quant is None):
            raise ValueError("hf needs exactly one of file or quant")
        return self


class S3Source(_Spec):
    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1)
    endpoint: str | None = Field(None, description="endpoint URL for MinIO and other S3-compatible stores")
    region: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "s3.endpoint")


class PvcSource(_Spec):
    claim_name: str = Field(alias="claimName", min_length=1)
    path: str = Field(min_length=1, description="GGUF file path inside the claim")

    @field_validator("path")
    @classmethod
    def _inside_volume(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or not path.name:
            raise ValueError("pvc.path must be a relative path inside the volume without '..'")
        return value


class OllamaSource(_Spec):
    model: str = Field(description="an Ollama model name: [host/namespace/]model[:tag], e.g. llama3.2:1b")
    registry: str | None = Field(None, description="a mirror's URL, replacing the name's registry")
    insecure: bool = Field(False, description="allow a plain http:// registry, as ollama pull --insecure")

    @model_validator(mode="after")
    def _resolvable(self) -> OllamaSource:
        self.reference()
        return self

    def reference(self) -> Reference:
        return parse_ollama_name(self.model, self.registry, self.insecure)


class OciSource(_Spec):
    ref: str = Field(description="[registry/]namespace/name[:tag][@sha256:digest] of a GGUF OCI artifact")
    insecure: bool = Field(False, description="talk plain http:// to the registry (a local or in-cluster one)")

    @model_validator(mode="after")
    def _resolvable(self) -> OciSource:
        self.reference()
        return self

    def reference(self) -> Reference:
        return parse_oci_ref(self.ref, self.insecure)


class ModelSource(_Spec):
    """Exactly one of hf, url, s3, pvc, ollama, oci; plus the optional expected sha256."""

    hf: HfSource | None = None
    url: str | None = None
    s3: S3Source | None = None
    pvc: PvcSource | None = None
    ollama: OllamaSource | None = None
    oci: OciSource | None = None
    sha256: str | None = None
    secret_ref: dict[str, Any] | None = Field(None, alias="secretRef")  # mounted as env by the Job

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "url")

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _SHA256.match(value):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return value.lower()

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [name for name in SOURCE_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"source needs exactly one of {', '.join(SOURCE_KINDS)} (got {', '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in SOURCE_KINDS if getattr(self, name) is not None)

    def registry_reference(self) -> Reference:
        """Where an ollama or oci source's manifest lives."""
        spec = self.ollama or self.oci
        assert spec is not None
        return spec.reference()

    def identity(self) -> dict[str, Any]:
        """What the bytes depend on, in canonical form: the marker records it.

        secretRef is left out: rotating a credential must not re-pull the model.
        """
        spec = self.model_dump(by_alias=True, exclude_none=True, exclude={"secret_ref"})
        return dict(sorted(spec.items()))

    def describe(self) -> str:
        """A one-line, credential-free name for logs and messages."""
        if self.hf is not None:
            pick = self.hf.file or f":{self.hf.quant}"
            return f"hf://{self.hf.repo}/{pick}@{self.hf.revision}"
        if self.url is not None:
            return redact_url(self.url)
        if self.s3 is not None:
            return f"s3://{self.s3.bucket}/{self.s3.key}"
        if self.ollama is not None or self.oci is not None:
            ref = self.registry_reference()
            return f"{self.kind}://{ref.host}/{ref.repository}:{ref.reference}"
        assert self.pvc is not None
        return f"pvc://{self.pvc.claim_name}/{self.pvc.path}"


def parse_source(data: dict[str, Any] | str) -> ModelSource:
    """Validate a source given as a dict or its JSON text; SourceError says what is wrong."""
    try:
        if isinstance(data, str):
            return ModelSource.model_validate_json(data)
        return ModelSource.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(_describe_problem(e) for e in err.errors(include_url=False))
        raise SourceError(f"invalid source: {problems}") from None


def _describe_problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
