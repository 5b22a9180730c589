"""Tool calling for any GGUF chat model.

- `tool_choice` "required" or a named function: the output is constrained by a
  grammar to `{"name": ..., "arguments": {...}}` matching one tool's parameter
  schema, so the call is always well-formed.
- "auto": the model's own chat template presents the tools, and the output is
  parsed afterwards. Both the Hermes/Qwen `<tool_call>{...}</tool_call>` form
  and a bare JSON object naming a tool are recognised.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from ..protocol.chat import ChatCompletionRequest, FunctionCall, NamedToolChoice, Tool, ToolCall
from .generation import grammar_for_schema

_TAGGED = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
# Text that may turn into a tool call; streaming holds it back until the end.
TOOL_CALL_PREFIXES = ("<tool_call>", "{")


def forced_grammar(req: ChatCompletionRequest) -> str | None:
    """Grammar that forces a call, or None when the model may answer in prose."""
    if not req.tools or req.tool_choice in (None, "auto", "none"):
        return None
    tools = req.tools
    if isinstance(req.tool_choice, NamedToolChoice):
        tools = [t for t in tools if t.function.name == req.tool_choice.function.name]
    schema = {"oneOf": [_call_schema(t) for t in tools]} if len(tools) > 1 else _call_schema(tools[0])
    return grammar_for_schema(schema, "tools")


def _call_schema(tool: Tool) -> dict[str, Any]:
    parameters = tool.function.parameters or {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, "arguments": parameters},
        "required": ["name", "arguments"],
    }


def offered_tools(req: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """Tools rendered into the prompt by the chat template."""
    if not req.tools or req.tool_choice == "none":
        return None
    return [t.model_dump(exclude_none=True) for t in req.tools]


def parse_tool_calls(text: str, req: ChatCompletionRequest) -> list[ToolCall] | None:
    """Tool calls found in the model's output, or None if it answered in prose."""
    if not req.tools or req.tool_choice == "none":
        return None
    names = {t.function.name for t in req.tools}
    candidates = _TAGGED.findall(text) or [text.strip()]
    calls = [call for c in candidates if (call := _parse_call(c, names)) is not None]
    return calls or None


def _parse_call(candidate: str, names: set[str]) -> ToolCall | None:
    try:
        obj = json.loads(candidate)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", function=FunctionCall(name=obj["name"], arguments=arguments))
