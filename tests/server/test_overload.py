"""Admission, and Retry-After for refused requests: the queue's drain time, then one completion apart."""

from __future__ import annotations

import pytest

from localmodel_server.engine.overload import MAX_RETRY_S, Admission, CompletionRate, ReturnSchedule
from support.fake_clock import Clock


def test_the_first_refused_client_returns_when_the_queue_ahead_has_drained():
    # 63 queued plus this one, 158 completions/s over the last 10 s: about 0.4 s, unjittered.
    schedule = ReturnSchedule(Clock())
    assert schedule.wait(63, 1580, 10.0, 0.0) == pytest.approx(64 / 158)


def test_a_burst_of_refusals_returns_one_completion_interval_apart():
    schedule = ReturnSchedule(Clock())
    waits = [schedule.wait(16, 100, 1.0, 0.0) for _ in range(40)]
    assert waits[0] == pytest.approx(17 / 100)
    # The 40th is sent back when 39 more places will have freed, not with the first.
    assert [b - a for a, b in zip(waits, waits[1:])] == pytest.approx([1 / 100] * 39)


def test_jitter_adds_at_most_one_completion_interval():
    waits = [ReturnSchedule(Clock()).wait(16, 100, 1.0, j) for j in (0.0, 0.5, 0.999)]
    assert waits == sorted(waits)
    assert waits[-1] - waits[0] == pytest.approx(0.999 / 100)


def test_the_line_lapses_as_its_times_pass():
    clock = Clock()
    schedule = ReturnSchedule(clock)
    for _ in range(100):
        schedule.wait(9, 100, 1.0, 0.0)  # a line of a second, of clients that never return
    assert schedule.wait(9, 100, 1.0, 0.0) == pytest.approx(1.1)
    clock.now += 5.0
    assert schedule.wait(9, 100, 1.0, 0.0) == pytest.approx(0.1)


def test_clients_refused_again_on_their_return_are_spaced_further_apart():
    # A closed loop: the places always go to clients that resend at once, so each refused
    # client returns at its time, is refused again and rejoins the line.
    clock = Clock()
    schedule = ReturnSchedule(clock)
    # Ten clients refused together, so several are due at once when they return.
    returns = [clock.now + schedule.wait(16, 100, 1.0, 0.0) for _ in range(10)]
    refusals = 10
    while clock.now < 1060.0:
        clock.now = min(returns)
        returns.remove(clock.now)
        returns.append(clock.now + schedule.wait(16, 100, 1.0, 0.0))
        refusals += 1
    # Paced at the drain rate the ten would be refused about 100 times a second (as often
    # as requests complete); stretched, they are refused a few times a second.
    assert refusals / 60 < 100 / 16
    assert max(b - a for a, b in zip(sorted(returns), sorted(returns)[1:])) <= 64 / 100 + 1e-9


def test_a_refusal_when_several_returns_were_due_stretches_the_line_once():
    clock = Clock()
    schedule = ReturnSchedule(clock)
    waits = [schedule.wait(16, 100, 1.0, 0.0) for _ in range(10)]
    clock.now += waits[-1]  # all ten were due by now; the last one just now
    assert schedule.wait(16, 100, 1.0, 0.0) == pytest.approx(17 / 100)
    assert schedule.wait(16, 100, 1.0, 0.0) == pytest.approx(19 / 100)  # spaced two intervals, not 2**10


def test_once_the_line_has_emptied_it_is_paced_at_the_drain_rate_again():
    clock = Clock()
    schedule = ReturnSchedule(clock)
    first = schedule.wait(16, 100, 1.0, 0.0)
    clock.now += first  # its client is back, refused again: the line stretches
    schedule.wait(16, 100, 1.0, 0.0)
    a, b = schedule.wait(16, 100, 1.0, 0.0), schedule.wait(16, 100, 1.0, 0.0)
    assert b - a == pytest.approx(2 / 100)  # two completion intervals apart, not one
    clock.now += 120.0  # everyone got in or gave up
    waits = [schedule.wait(16, 100, 1.0, 0.0) for _ in range(2)]
    assert waits == pytest.approx([17 / 100, 18 / 100])


def test_a_slow_server_asks_for_a_longer_wait_than_a_fast_one():
    assert ReturnSchedule(Clock()).wait(64, 10, 10.0, 0.5) > 10 * ReturnSchedule(Clock()).wait(64, 1000, 10.0, 0.5)


def test_without_a_recent_completion_the_wait_is_at_least_the_quiet_span():
    assert ReturnSchedule(Clock()).wait(5, 0, 10.0, 0.5) == pytest.approx(10.0)
    assert ReturnSchedule(Clock()).wait(5, 0, 0.2, 0.5) == pytest.approx(1.0)


def test_the_wait_is_capped_where_clients_still_honour_it():
    schedule = ReturnSchedule(Clock())
    assert schedule.wait(10_000, 1, 10.0, 0.9) == MAX_RETRY_S
    # A line longer than the cap keeps everyone at the cap rather than growing past it.
    assert all(schedule.wait(0, 100, 1.0, 0.0) <= MAX_RETRY_S for _ in range(10_000))


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
    admission = Admission(slots=1, queue_size=1)
    assert admission.enter() and admission.enter()
    assert not admission.enter()
    admission.leave()
    assert admission.enter()
    assert not admission.enter()
    assert admission.taken == 2


def test_a_free_slot_ends_the_return_line():
    clock = Clock()
    admission = Admission(slots=1, queue_size=1, clock=clock)
    assert admission.enter() and admission.enter()
    for _ in range(50):
        admission.returns.wait(1, 10, 1.0, 0.0)  # a line of five seconds
    admission.leave()
    admission.leave()
    assert admission.enter()  # a slot was free: whoever was in the line got in or left
    assert admission.returns.wait(1, 10, 1.0, 0.0) == pytest.approx(2 / 10)
