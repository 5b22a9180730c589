"""Which failures send a request to another endpoint: a pure decision, tested as a table."""

from __future__ import annotations

import pytest

from localmodel_server.router.proxy import MAX_ENDPOINTS_PER_REQUEST, Outcome, is_refusal, may_try_another


@pytest.mark.parametrize("outcome,tried,expected", [
    (Outcome.CONNECT_FAILED, 1, True),  # not a byte left: safe anywhere
    (Outcome.REFUSED, 1, True),  # 503 + Retry-After: the backend did no work
    (Outcome.DISCONNECTED, 1, False),  # the backend had the request: it may have acted, or crashed on it
    (Outcome.TIMED_OUT, 1, False),  # it may still be working on it
    (Outcome.CONNECT_FAILED, 2, False),  # one more endpoint, never a walk through every replica
    (Outcome.REFUSED, 2, False),
])
def test_only_work_free_failures_are_retried_and_only_once(outcome, tried, expected):
    assert MAX_ENDPOINTS_PER_REQUEST == 2
    assert may_try_another(outcome, tried) is expected


@pytest.mark.parametrize("status,headers,expected", [
    (503, [(b"Retry-After", b"1")], True),
    (503, [(b"retry-after", b"30"), (b"content-type", b"application/json")], True),
    (503, [], False),  # a 503 that does not say when is an answer like any other
    (502, [(b"Retry-After", b"1")], False),
    (429, [(b"Retry-After", b"1")], False),
])
def test_a_refusal_is_a_503_with_retry_after(status, headers, expected):
    assert is_refusal(status, headers) is expected
