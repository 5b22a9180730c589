"""Per-model request defaults, such as an Ollama model's `params` layer.

The puller stores them in the model's marker (`model.gguf.json`, key
`defaults`), in Ollama's option names. A request field the client left unset
takes the default; one the client sent always wins. Both APIs apply them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..protocol.sampling import SamplingFields

log = logging.getLogger(__name__)

# Ollama option name -> OpenAI request field.
_FIELDS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed",
    "stop": "stop", "num_predict": "max_tokens",
    "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
}


class RequestDefaults:
    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self._fields = {
            _FIELDS[k]: v for k, v in self.options.items()
            if k in _FIELDS and not (k == "num_predict" and (not isinstance(v, int) or v <= 0))
        }

    @classmethod
    def beside(cls, model_path: Path) -> RequestDefaults:
        """The defaults in the marker next to the model file; none when there is no marker."""
        marker = model_path.with_name(model_path.name + ".json")
        try:
            data = json.loads(marker.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable marker %s: %s", marker, exc)
            return cls()
        defaults = data.get("defaults") if isinstance(data, dict) else None
        return cls(defaults if isinstance(defaults, dict) else None)

    def apply(self, req: SamplingFields) -> SamplingFields:
        if not self._fields:
            return req
        unset = {k: v for k, v in self._fields.items() if k not in req.model_fields_set}
        if not unset:
            return req
        return req.model_validate({**req.model_dump(exclude_unset=True, by_alias=True), **unset})

    def as_parameters(self) -> str:
        """Ollama's `parameters` text in /api/show: one `name value` line each, stop repeated."""
        lines = []
        for key, value in self.options.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"{key:<15}{json.dumps(item) if isinstance(item, str) else item}")
        return "\n".join(lines)
