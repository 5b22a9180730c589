"""Every error leaves as the protocol model says, serialized in one place (server/protocol/errors.py)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from localmodel_server.protocol import errors, ollama

ROOT = Path(__file__).resolve().parents[1]
# Building an error body, or framing one as an SSE event, by hand: a dict with an "error" key,
# an SSE "data: " frame, or a body serialized outside the two response adapters below.
HAND_BUILT = re.compile(r"""(?<!`)[{,]\s*["']error["']\s*:|b["']data: |\.body_bytes\(\)""")
# The adapters that put an already-serialized error onto a response: Starlette's, the router's,
# and the server's HTTP protocol (which refuses an oversized head before any ASGI app runs).
ADAPTERS = {ROOT / "server" / "api" / "errors.py", ROOT / "server" / "router" / "app.py",
            ROOT / "server" / "api" / "http_protocol.py"}


def test_no_module_builds_an_error_itself():
    copies = []
    for path in sorted((ROOT / "server").rglob("*.py")):
        if path.parent == ROOT / "server" / "protocol":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if HAND_BUILT.search(code) and not (path in ADAPTERS and ".body_bytes()" in code):
                copies.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not copies, "build errors with localmodel_server.protocol.errors:\n" + "\n".join(copies)


def test_the_body_is_the_protocol_model_with_nulls_kept():
    exc = errors.queue_full(250)
    parsed = errors.ErrorResponse.model_validate_json(exc.body_bytes())
    assert parsed.error.code == "queue_full" and parsed.error.type == "service_unavailable_error"
    # OpenAI sends param and code even when null; clients index them without a default.
    assert orjson.loads(errors.internal_error().body_bytes())["error"] == {
        "message": "The server had an error while processing your request.",
        "type": "server_error", "param": None, "code": None,
    }


def test_raw_headers_carry_the_content_type_and_the_errors_own():
    headers = errors.queue_full(1500).raw_headers()
    assert headers[0] == (b"content-type", b"application/json")
    assert (b"retry-after", b"2") in headers and (b"retry-after-ms", b"1500") in headers


def test_the_sse_event_is_one_data_frame_of_the_same_body():
    exc = errors.bad_gateway("gone")
    event = exc.sse_event()
    assert event == b"data: " + exc.body_bytes() + b"\n\n"
    assert errors.ErrorResponse.model_validate_json(event.removeprefix(b"data: ")).error.code == "bad_gateway"


def test_ollama_errors_are_a_bare_sentence():
    assert orjson.loads(ollama.error_body('model "x" not found')) == {"error": 'model "x" not found'}


def test_the_servers_stream_ends_with_the_same_error_event_as_the_routers():
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from localmodel_server.api.app import sse

    async def failing_stream():
        yield '{"n": 1}'
        yield errors.internal_error()  # the engine failed after the 200

    app = Starlette(routes=[Route("/", lambda request: sse(failing_stream()))])
    with TestClient(app) as client:
        text = client.get("/").content
    assert text == b'data: {"n": 1}\n\n' + errors.internal_error().sse_event()
