"""/v1/models types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "localmodel"
    # Extensions: which served model an alias points at, and whether it can answer now.
    root: str | None = None
    ready: bool | None = None
    status: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
