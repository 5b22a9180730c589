"""The OpenAI error envelope, shared by the model server and the router.

Every failure a client can see is an `APIError`; its body is always
`{"error": {"message", "type", "param", "code"}}` (`ErrorResponse`), the shape
the official SDKs parse into typed exceptions. This module is the only place
that shape is serialized: as a JSON body with its headers, and as the SSE event
that ends a stream which failed after it started.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class APIError(Exception):
    """An error that is part of the API: it carries its HTTP status and envelope."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def envelope(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code))

    def body_bytes(self) -> bytes:
        """The JSON body; `param` and `code` are present even when null, as OpenAI sends them."""
        return self.envelope().model_dump_json().encode()

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """Content-Type and this error's own headers, as (name, value) bytes for a raw HTTP/ASGI response."""
        return [_JSON_CONTENT_TYPE, *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items())]

    def sse_event(self) -> bytes:
        """The event that ends a stream which fails after its status was sent.

        OpenAI's SDKs raise an APIError when an event's data carries "error".
        """
        return sse_error_event(self.body_bytes())


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(model: str, available: Iterable[str]) -> APIError:
    names = ", ".join(sorted(available)) or "none"
    return APIError(
        404,
        f"The model '{model}' does not exist. Available models: {names}.",
        param="model",
        code="model_not_found",
    )


def context_length_exceeded(limit: int, requested: int, prompt: int, completion: int) -> APIError:
    # OpenAI's own wording, so clients that match on it keep working.
    return APIError(
        400,
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{requested} tokens ({prompt} in the messages, {completion} in the completion). "
        "Please reduce the length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )


def service_unavailable(message: str, *, retry_after: int = 1, code: str = "service_unavailable") -> APIError:
    return APIError(
        503,
        message,
        type="service_unavailable_error",
        code=code,
        headers={"Retry-After": str(retry_after)},
    )


QUEUE_FULL = "queue_full"


def queue_full(retry_after_ms: int) -> APIError:
    """Every slot is busy and the wait queue is full: a statement about this moment's load.

    Retry-After has whole seconds only; OpenAI's SDKs read `retry-after-ms` first, so
    a wait below a second (and its jitter) still reaches them. The router relays this
    refusal without taking the backend out of rotation, since one finished request
    makes room again.
    """
    exc = service_unavailable("All slots are busy and the queue is full; retry shortly.",
                              retry_after=max(1, math.ceil(retry_after_ms / 1000)), code=QUEUE_FULL)
    exc.headers["retry-after-ms"] = str(retry_after_ms)
    return exc


def bad_gateway(message: str) -> APIError:
    """A proxy (the router) could not get an answer from any backend."""
    return APIError(502, message, type="server_error", code="bad_gateway")


def gateway_timeout(message: str) -> APIError:
    """A proxy (the router) waited too long for a backend's answer."""
    return APIError(504, message, type="server_error", code="upstream_timeout")


def payload_too_large(limit_bytes: int) -> APIError:
    return APIError(
        413,
        f"Request body is larger than the limit of {limit_bytes} bytes.",
        code="request_too_large",
    )


def headers_too_large(message: str) -> APIError:
    return APIError(431, message, code="request_headers_too_large")


def authentication_error(message: str = "Invalid or missing API key.") -> APIError:
    return APIError(
        401,
        message,
        type="authentication_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def not_found(path: str) -> APIError:
    return APIError(404, f"Unknown path: {path}", code="not_found")


def method_not_allowed(method: str, path: str) -> APIError:
    return APIError(405, f"Method {method} is not allowed on {path}.", code="method_not_allowed")


def internal_error() -> APIError:
    # Never leak a traceback or internal detail to the client; the log has it.
    return APIError(500, "The server had an error while processing your request.", type="server_error")


def from_validation_error(exc: ValidationError | list[dict[str, Any]]) -> APIError:
    """Turn pydantic's error list into one readable 400 naming the offending parameter."""
    errors = exc.errors() if isinstance(exc, ValidationError) else exc
    if not errors:
        return invalid_request("Invalid request body.")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    # Union members show up as loc segments ("str", "list[...]"); they mean nothing to a client.
    loc = [p for p in loc if not _is_type_tag(p)]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind in ("json_invalid", "json_type"):
        return invalid_request(
            "We could not parse the JSON body of your request. Send valid JSON "
            "with Content-Type: application/json.",
            code="invalid_json",
        )
    if kind == "missing":
        return invalid_request(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if kind == "model_attributes_type" and not param:
        return invalid_request("The request body must be a JSON object.", code="invalid_type")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    where = f"'{param}'" if param else "the request body"
    return invalid_request(f"Invalid value for {where}: {message}", param=param, code="invalid_value")


def _is_type_tag(segment: str) -> bool:
    return segment in {"str", "int", "float", "bool", "dict", "list"} or "[" in segment or segment.startswith("function-")


def sse_error_event(body: bytes) -> bytes:
    """Frames an error body already serialized (APIError's own, or a backend's being
    relayed) as the event that ends a stream whose status was already sent."""
    return b"data: " + body + b"\n\n"
