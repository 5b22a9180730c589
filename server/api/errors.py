"""Every failure leaves the server as an OpenAI error envelope with a 4xx/5xx status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ..protocol import errors

log = logging.getLogger(__name__)


def error_response(exc: errors.APIError) -> Response:
    """The envelope as a Starlette response, which is also an ASGI app (the middleware sends it so)."""
    response = Response(exc.body_bytes(), status_code=exc.status_code)
    response.raw_headers = [*exc.raw_headers(), *response.raw_headers]  # content-length stays
    return response


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.APIError)
    async def _api_error(_: Request, exc: errors.APIError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI would answer 422 in its own shape; OpenAI clients expect 400 and the envelope.
        return error_response(errors.from_validation_error(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if isinstance(exc.__cause__, errors.APIError):  # e.g. the body limit tripped while FastAPI read the body
            return error_response(exc.__cause__)
        if exc.status_code == 404:
            return error_response(errors.not_found(request.url.path))
        if exc.status_code == 405:
            return error_response(errors.method_not_allowed(request.method, request.url.path))
        if exc.status_code == 400:
            return error_response(errors.invalid_request(str(exc.detail)))
        return error_response(errors.APIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(errors.internal_error())
