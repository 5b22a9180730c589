"""Admission and Retry-After for a refused request: the queue's drain time at the recent rate, with jitter."""

from __future__ import annotations

import pytest

from localmodel_server.engine.overload import MAX_RETRY_S, Admission, CompletionRate, retry_after


def test_the_wait_is_the_queue_ahead_over_the_completion_rate():
    # 63 queued plus this one, 158 completions/s over the last 10 s: about 0.4 s, unjittered.
    assert retry_after(63, 1580, 10.0, 0.5) == pytest.approx(64 / 158)


def test_jitter_spreads_the_wait_from_half_to_one_and_a_half_times():
    waits = [retry_after(63, 1580, 10.0, j) for j in (0.0, 0.25, 0.5, 0.75, 0.999)]
    assert waits == sorted(waits) and len(set(waits)) == len(waits)
    assert waits[0] == pytest.approx(0.5 * 64 / 158)
    assert waits[-1] == pytest.approx(1.499 * 64 / 158)


def test_a_slow_server_asks_for_a_longer_wait_than_a_fast_one():
    assert retry_after(64, 10, 10.0, 0.5) > 10 * retry_after(64, 1000, 10.0, 0.5)


def test_without_a_recent_completion_the_wait_is_at_least_the_quiet_span():
    assert retry_after(5, 0, 10.0, 0.5) == pytest.approx(10.0)
    assert retry_after(5, 0, 0.2, 0.5) == pytest.approx(1.0)


def test_the_wait_is_capped_where_clients_still_honour_it():
    assert retry_after(10_000, 1, 10.0, 0.9) == MAX_RETRY_S


def test_completion_rate_counts_only_the_window():
    now = [100.0]
    rate = CompletionRate(window=10.0, clock=lambda: now[0])
    assert rate.observed() == (0, 0.0)
    for t in (101.0, 102.0, 105.0):
        now[0] = t
        rate.record()
    now[0] = 106.0
    assert rate.observed() == (3, 6.0)
    now[0] = 113.0  # 101 and 102 have left the window
    assert rate.observed() == (1, 10.0)


def test_admission_holds_as_many_requests_as_it_has_places():
    admission = Admission(places=2)
    assert admission.enter() and admission.enter()
    assert not admission.enter()
    admission.leave()
    assert admission.enter()
    assert not admission.enter()
    assert admission.taken == 2
