"""The pure budget arithmetic: UTC windows, refusals, thresholds and the sliding minute."""
from __future__ import annotations

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clients.budgets import (
    DAY,
    MONTH,
    Limits,
    SlidingWindow,
    Totals,
    add_spend,
    crossed,
    current,
    day_start,
    month_start,
    refusal,
    remaining,
    spent,
    window_end,
    window_label,
)


def utc(y, mo, d, h=0, mi=0, s=0.0) -> float:
    return calendar.timegm((y, mo, d, h, mi, 0)) + s


@pytest.mark.parametrize(
    "ts, day, next_day, month, next_month",
    [
        (utc(2025, 1, 15, 12, 30), utc(2025, 1, 15), utc(2025, 1, 16), utc(2025, 1, 1), utc(2025, 2, 1)),
        (utc(2025, 1, 15), utc(2025, 1, 15), utc(2025, 1, 16), utc(2025, 1, 1), utc(2025, 2, 1)),  # at midnight
        (utc(2025, 1, 15, 23, 59, 59.9), utc(2025, 1, 15), utc(2025, 1, 16), utc(2025, 1, 1), utc(2025, 2, 1)),
        (utc(2024, 12, 31, 23), utc(2024, 12, 31), utc(2025, 1, 1), utc(2024, 12, 1), utc(2025, 1, 1)),  # year end
        (utc(2024, 2, 29, 8), utc(2024, 2, 29), utc(2024, 3, 1), utc(2024, 2, 1), utc(2024, 3, 1)),  # leap day
        (utc(2025, 2, 28, 8), utc(2025, 2, 28), utc(2025, 3, 1), utc(2025, 2, 1), utc(2025, 3, 1)),
    ],
)
def test_utc_windows(ts, day, next_day, month, next_month):
    assert day_start(ts) == day and window_end(DAY, ts) == next_day
    assert month_start(ts) == month and window_end(MONTH, ts) == next_month


def test_window_labels():
    ts = utc(2025, 3, 9, 17)
    assert (window_label(DAY, ts), window_label(MONTH, ts)) == ("2025-03-09", "2025-03")


NOW = utc(2025, 1, 15, 18)
TODAY, THIS_MONTH = utc(2025, 1, 15), utc(2025, 1, 1)


@pytest.mark.parametrize(
    "limits, day, month, kind, message",
    [
        (Limits(daily_usd=5), Totals(DAY, TODAY, 5.02), None, "daily_usd",
         "daily budget of $5.00 reached: $5.02 spent today; resets at 00:00 UTC"),
        (Limits(daily_usd=5), Totals(DAY, TODAY, 5.0), None, "daily_usd",  # reaching it is enough
         "daily budget of $5.00 reached: $5.00 spent today; resets at 00:00 UTC"),
        (Limits(daily_usd=5, monthly_usd=50), Totals(DAY, TODAY, 1), Totals(MONTH, THIS_MONTH, 50.1), "monthly_usd",
         "monthly budget of $50.00 reached: $50.10 spent this month; resets at 00:00 UTC on 2025-02-01"),
        (Limits(daily_tokens=2_000_000), Totals(DAY, TODAY, 0, 2_000_512), None, "daily_tokens",
         "daily token budget of 2,000,000 reached: 2,000,512 tokens used today; resets at 00:00 UTC"),
        (Limits(monthly_tokens=10), None, Totals(MONTH, THIS_MONTH, 0, 11), "monthly_tokens",
         "monthly token budget of 10 reached: 11 tokens used this month; resets at 00:00 UTC on 2025-02-01"),
        (Limits(daily_usd=0), None, None, "daily_usd",  # a budget of 0 blocks the key
         "daily budget of $0.00 reached: $0.00 spent today; resets at 00:00 UTC"),
    ],
)
def test_refusal_names_the_budget_and_what_was_spent(limits, day, month, kind, message):
    r = refusal(limits, day, month, NOW)
    assert r is not None and r.kind == kind and r.message() == message
    assert r.resets_at == (utc(2025, 1, 16) if kind.startswith("daily") else utc(2025, 2, 1))


@pytest.mark.parametrize(
    "limits, day, month",
    [
        (Limits(daily_usd=5), Totals(DAY, TODAY, 4.99), None),
        (Limits(daily_usd=5), Totals(DAY, utc(2025, 1, 14), 99.0), None),  # yesterday's spend: reset at midnight
        (Limits(monthly_usd=5), None, Totals(MONTH, utc(2024, 12, 1), 99.0)),  # last month's
        (Limits(daily_tokens=100), Totals(DAY, TODAY, 1000.0, 99), None),  # USD spent, but the budget is tokens
        (Limits(rpm=1), Totals(DAY, TODAY, 1e9, 10**9), None),  # rate limits only: no budget
    ],
)
def test_no_refusal_under_budget_or_in_a_new_window(limits, day, month):
    assert refusal(limits, day, month, NOW) is None


def test_limits_of_nothing_is_none():
    assert Limits.of(daily_usd=None, rpm=None) is None
    assert Limits.of(rpm=0) == Limits(rpm=0)
    assert Limits(rpm=5).has_budget is False and Limits(monthly_tokens=1).has_budget is True


def test_current_and_remaining():
    old = Totals(DAY, utc(2025, 1, 14), 3.0, 7)
    assert current(old, DAY, NOW).usd == 0 and current(old, DAY, NOW).start == TODAY
    month = Totals(MONTH, THIS_MONTH, 3.0)
    assert current(month, MONTH, NOW) is month
    assert (remaining(5, 3.5), remaining(5, 7), remaining(None, 1)) == (1.5, 0.0, None)


@pytest.mark.parametrize("totals, window, unit, expected", [
    (None, DAY, "usd", 0.0),
    (Totals(DAY, TODAY, 3.5, 7), DAY, "usd", 3.5),
    (Totals(DAY, TODAY, 3.5, 7), DAY, "tokens", 7.0),
    (Totals(DAY, utc(2025, 1, 14), 3.5, 7), DAY, "usd", 0.0),  # yesterday's: reset
    (Totals(MONTH, THIS_MONTH, 9.0, 40), MONTH, "tokens", 40.0),
])
def test_spent_is_what_the_current_window_counts(totals, window, unit, expected):
    assert spent(totals, unit, NOW) == expected == current(totals, window, NOW).amount(unit)


def test_add_spend_rolls_over_and_ignores_a_request_from_before_midnight():
    totals = add_spend(None, DAY, TODAY + 10, 0.5, 10)
    assert (totals.start, totals.usd, totals.tokens) == (TODAY, 0.5, 10)
    tomorrow = add_spend(totals, DAY, TODAY + 86400 + 1, 0.25, 5)
    assert (tomorrow.start, tomorrow.usd, tomorrow.tokens) == (TODAY + 86400, 0.25, 5)
    late = add_spend(tomorrow, DAY, TODAY + 86399, 9.0, 9)  # began yesterday, finished today
    assert (late.usd, late.tokens) == (0.25, 5)


def test_cents_add_up_to_whole_budgets():
    totals = Totals(DAY, TODAY)
    for _ in range(10):
        totals.add(0.01, 0)
    assert totals.usd == 0.1  # not 0.09999999999999999: a $0.10 budget is reached
    assert refusal(Limits(daily_usd=0.1), totals, None, NOW) is not None


@pytest.mark.parametrize(
    "limit, before, after, expected",
    [
        (10, 0, 4.9, []),
        (10, 0, 5, [50]),
        (10, 4.9, 5.1, [50]),
        (10, 5, 7, []),  # 50 was crossed by an earlier request
        (10, 4, 9, [50, 80]),  # one request may cross several
        (10, 7, 12, [80, 100]),
        (10, 10, 11, []),  # past 100: nothing more
        (10, 3, 3, []),  # a free request
        (0, 0, 1, [50, 80, 100]),  # a zero budget: the first spend crosses them all
        (0, 1, 2, []),
    ],
)
def test_thresholds_crossed(limit, before, after, expected):
    assert crossed(limit, before, after, (50, 80, 100)) == expected


@given(limit=st.floats(0.01, 1000), steps=st.lists(st.floats(0, 100), max_size=60))
def test_each_threshold_fires_once_and_only_once_reached(limit, steps):
    spent, fired = 0.0, []
    for step in steps:
        fired += crossed(limit, spent, spent + step, (50, 80, 100))
        spent += step
    assert len(fired) == len(set(fired))  # never twice
    assert set(fired) == {t for t in (50, 80, 100) if t * limit <= spent * 100}


@pytest.mark.parametrize(
    "adds, now, limit, cost, wait",
    [
        ([], 100, 3, 1, None),  # empty: fits
        ([(50, 1), (60, 1)], 100, 3, 1, None),  # 2 of 3 used
        ([(50, 1), (60, 1), (70, 1)], 100, 3, 1, 10),  # full: wait until the one at t=50 leaves (t=110)
        ([(50, 1), (60, 1), (70, 1)], 125, 3, 1, None),  # t=50 and 60 have left
        ([(90, 100), (95, 100)], 100, 250, 100, 50),  # tokens: the first 100 must leave
        ([(90, 100), (95, 100)], 100, 250, 250, 55),  # both must leave
        ([(90, 100)], 100, 50, 500, 50),  # bigger than the limit: waits for an empty window ...
        ([], 100, 50, 500, None),  # ... then goes alone
    ],
)
def test_sliding_window_wait(adds, now, limit, cost, wait):
    window = SlidingWindow()
    for t, amount in adds:
        window.add(t, amount)
    window.prune(now)
    assert window.wait_for(now, limit, cost) == wait


def test_sliding_window_correction_and_prune():
    window = SlidingWindow()
    entry = window.add(10, 1000)  # an estimate ...
    window.add(20, 5)
    window.correct(entry, 300)  # ... replaced by the real usage
    assert window.total == 305
    window.prune(71)  # the entry at t=10 left at t=70
    assert window.total == 5
    window.correct(entry, 9999)  # a late correction of a gone entry changes nothing
    assert window.total == 5
    window.prune(81)
    assert window.total == 0 and not window.entries


def test_sliding_window_keeps_one_bucket_a_second_however_many_adds():
    window = SlidingWindow()
    handles = [window.add(100 + i / 10_000, 1) for i in range(10_000)]  # 10,000 adds in one second
    assert len(window.entries) == 1 and window.total == 10_000
    window.correct(handles[0], 5)  # a reservation in a shared bucket is still corrected exactly
    assert window.total == 10_004 and window.entries[0][1] == 10_004
    for t in range(101, 161):  # one add a second for a minute
        window.add(t, 1)
    window.prune(160.5)  # the first bucket stays while its latest add (t=100.9999) is in the minute
    assert window.total == 10_064 and len(window.entries) == 61
    window.prune(161)  # then it leaves, and so does t=101's
    assert window.total == 59 and len(window.entries) == 59


@pytest.mark.parametrize(
    "adds, now, left",
    [
        ([(10.2, 1), (10.9, 1)], 70.5, 2),  # both in the bucket of second 10, which leaves with its latest add
        ([(10.2, 1), (10.9, 1)], 70.9, 0),
        ([(10.2, 1), (11.0, 1)], 70.5, 1),  # second 11 is a bucket of its own
    ],
)
def test_sliding_window_bucket_leaves_with_its_latest_add(adds, now, left):
    window = SlidingWindow()
    for t, amount in adds:
        window.add(t, amount)
    window.prune(now)
    assert window.total == left
