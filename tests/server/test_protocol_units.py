"""Wire-model validation and tool-call parsing (no model needed)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from localmodel_server.protocol import errors
from localmodel_server.protocol.chat import ChatCompletionRequest
from localmodel_server.serving.tools import parse_tool_calls

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}], **fields})


def error_for(**fields) -> dict:
    with pytest.raises(ValidationError) as exc:
        request(**fields)
    return errors.from_validation_error(exc.value).envelope().error.model_dump()


def test_completion_limit_prefers_max_completion_tokens():
    assert request(max_tokens=10, max_completion_tokens=5).completion_limit == 5
    assert request(max_tokens=10).completion_limit == 10
    assert request().completion_limit is None


def test_validation_error_names_the_parameter():
    error = error_for(top_p=0)
    assert error["param"] == "top_p" and error["type"] == "invalid_request_error"
    assert "top_p" in error["message"]


def test_text_parts_are_joined():
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert req.messages[0].text == "ab"


def test_image_parts_are_rejected():
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})


@pytest.mark.parametrize("output", [
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
    '  {"name": "get_weather", "arguments": {"city": "Paris"}}  ',
])
def test_tool_calls_are_parsed_from_output(output):
    (call,) = parse_tool_calls(output, request(tools=TOOLS))
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


@pytest.mark.parametrize("output", [
    "It is sunny in Paris.",
    '{"name": "not_a_tool", "arguments": {}}',
    '<tool_call>{"name": "get_weather", "arguments": </tool_call>',
])
def test_prose_and_unknown_tools_are_not_calls(output):
    assert parse_tool_calls(output, request(tools=TOOLS)) is None


def test_tool_choice_none_never_parses_calls():
    output = '{"name": "get_weather", "arguments": {}}'
    assert parse_tool_calls(output, request(tools=TOOLS, tool_choice="none")) is None
