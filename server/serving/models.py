"""/v1/models: the served id and its aliases."""

from __future__ import annotations

from ..protocol.models import ModelCard, ModelList
from ..runtime import ModelRuntime, State


class ModelsService:
    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime

    def _card(self, name: str) -> ModelCard:
        rt = self.runtime
        return ModelCard(
            id=name, created=rt.created, root=rt.settings.model_id,
            ready=rt.state is State.READY, status=rt.state.value,
        )

    def list(self) -> ModelList:
        s = self.runtime.settings
        return ModelList(data=[self._card(s.model_id), *(self._card(a) for a in s.aliases)])

    def get(self, name: str) -> ModelCard:
        self.runtime.check_model_name(name)
        return self._card(name)
