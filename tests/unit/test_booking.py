"""The slot logic of switchboard.booking: opening hours, slot alignment, the booking window, time zones and
the days the clocks change, and which open slots are offered instead. No I/O."""

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.agent import BookingPolicy, load_agent
from switchboard.booking import (
    MAX_SUGGESTIONS,
    SlotGrid,
    SlotProblem,
    SlotRefused,
    local_time,
    slot_key,
    spoken,
    spoken_list,
    wall_iso,
)

REPO = Path(__file__).resolve().parents[2]
NEW_YORK = ZoneInfo("America/New_York")


def clinic_policy() -> BookingPolicy:
    policy = load_agent(REPO / "agents" / "clinic-receptionist.yaml").tools.book_appointment
    assert policy is not None
    return policy


def policy(timezone: str = "America/New_York", slot_minutes: int = 30, **overrides: Any) -> BookingPolicy:
    every_day = {
        day: [{"open": "00:00", "close": "04:00"}] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    }
    fields: dict[str, Any] = {
        "calendar": "test",
        "timezone": timezone,
        "slot_minutes": slot_minutes,
        "opening_hours": every_day,
        "max_days_ahead": 366,
    }
    return BookingPolicy.model_validate(fields | overrides)


def ny(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


# Monday 2 March 2026, noon in New York: the clinic's lunch break.
NOW = ny(2026, 3, 2, 12)


def refusal(grid: SlotGrid, text: str, now: datetime = NOW) -> SlotProblem:
    with pytest.raises(SlotRefused) as refused:
        grid.check(grid.parse(text), now)
    return refused.value.problem


# -- the clinic's week ------------------------------------------------------------------------------


def test_a_day_is_cut_into_slots_from_each_window_opening() -> None:
    grid = SlotGrid(clinic_policy())

    monday = [slot.strftime("%H:%M") for slot in grid.slots_on(date(2026, 3, 2))]

    assert monday == [
        "08:30", "09:00", "09:30", "10:00", "10:30", "11:00", "11:30",
        "13:00", "13:30", "14:00", "14:30", "15:00", "15:30", "16:00", "16:30", "17:00",
    ]  # fmt: skip
    assert grid.slots_on(date(2026, 3, 5))[-1].strftime("%H:%M") == "18:30"  # Thursday: open until 19:00
    assert grid.slots_on(date(2026, 3, 6))[-1].strftime("%H:%M") == "15:30"  # Friday: until 16:00
    assert grid.slots_on(date(2026, 3, 7)) == []  # Saturday: closed
    assert all(slot.tzinfo is not None for slot in monday_slots(grid))


def monday_slots(grid: SlotGrid) -> list[datetime]:
    return grid.slots_on(date(2026, 3, 2))


@pytest.mark.parametrize("text", ["2026-03-02T13:00", "2026-03-03T11:30", "2026-03-05T18:30", "2026-05-01T15:30"])
def test_open_slots_are_accepted(text: str) -> None:
    grid = SlotGrid(clinic_policy())

    grid.check(grid.parse(text), NOW)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-03-02T10:00", SlotProblem.PAST),  # this morning
        ("2026-03-02T12:00", SlotProblem.PAST),  # now
        ("2020-01-06T10:00", SlotProblem.PAST),
        ("2026-03-03T12:00", SlotProblem.CLOSED),  # lunch
        ("2026-03-03T08:00", SlotProblem.CLOSED),  # before opening
        ("2026-03-03T17:30", SlotProblem.CLOSED),  # at closing
        ("2026-03-07T10:00", SlotProblem.CLOSED),  # Saturday
        ("2026-03-03T10:15", SlotProblem.MISALIGNED),
        ("2026-03-03T10:00:30", SlotProblem.MISALIGNED),
        ("2026-03-06T15:45", SlotProblem.MISALIGNED),  # would end after the 16:00 close
        ("2026-05-04T09:00", SlotProblem.TOO_FAR),  # 63 days ahead; the clinic books 60
        ("next tuesday", SlotProblem.NOT_A_TIME),
    ],
)
def test_times_outside_the_policy_are_refused_for_their_reason(text: str, problem: SlotProblem) -> None:
    assert refusal(SlotGrid(clinic_policy()), text) is problem


def test_the_booking_window_counts_days_in_the_calendars_zone() -> None:
    grid = SlotGrid(clinic_policy())
    # 23:30 in New York is already the next day in UTC: the last bookable day is still counted from 2 March.
    late_evening = ny(2026, 3, 2, 23, 30)

    assert grid.last_day(late_evening) == date(2026, 5, 1)
    grid.check(grid.parse("2026-05-01T09:00"), late_evening)


def test_a_start_with_an_offset_names_an_instant_and_is_read_in_the_calendars_zone() -> None:
    grid = SlotGrid(clinic_policy())

    for text in ("2026-03-03T15:30:00+00:00", "2026-03-03T15:30Z", "2026-03-03T07:30-08:00"):
        start = grid.parse(text)
        assert start == ny(2026, 3, 3, 10, 30)
        grid.check(start, NOW)


def test_slot_keys_are_utc_on_either_side_of_the_clock_change() -> None:
    grid = SlotGrid(clinic_policy())

    assert slot_key(grid.parse("2026-03-06T10:00")) == "SLOT#2026-03-06T15:00:00Z"  # EST, UTC-5
    assert slot_key(grid.parse("2026-03-09T10:00")) == "SLOT#2026-03-09T14:00:00Z"  # EDT, UTC-4


# -- the days the clocks change ---------------------------------------------------------------------------


def test_the_hour_the_clocks_skip_has_no_slots() -> None:
    grid = SlotGrid(policy())  # every day 00:00-04:00

    spring_forward = grid.slots_on(date(2026, 3, 8))

    assert [slot.strftime("%H:%M") for slot in spring_forward] == [
        "00:00", "00:30", "01:00", "01:30", "03:00", "03:30",
    ]  # fmt: skip
    # 01:30 EST and 03:00 EDT are 30 real minutes apart.
    assert spring_forward[4].astimezone(UTC) - spring_forward[3].astimezone(UTC) == timedelta(minutes=30)
    assert refusal(grid, "2026-03-08T02:30", now=ny(2026, 1, 1, 0)) is SlotProblem.NONEXISTENT


def test_the_hour_the_clocks_pass_twice_has_no_slots() -> None:
    grid = SlotGrid(policy())
    before = ny(2026, 1, 1, 0)

    fall_back = grid.slots_on(date(2026, 11, 1))

    assert [slot.strftime("%H:%M") for slot in fall_back] == ["00:00", "00:30", "02:00", "02:30", "03:00", "03:30"]
    assert refusal(grid, "2026-11-01T01:30", now=before) is SlotProblem.AMBIGUOUS
    # Even with its offset, which makes the instant clear, "1:30 that night" is not something to book.
    assert refusal(grid, "2026-11-01T01:30-05:00", now=before) is SlotProblem.AMBIGUOUS


def test_local_time_tells_a_gap_from_a_fold() -> None:
    with pytest.raises(SlotRefused) as gap:
        local_time(datetime(2026, 3, 29, 1, 30), ZoneInfo("Europe/London"))
    with pytest.raises(SlotRefused) as fold:
        local_time(datetime(2026, 10, 25, 1, 30), ZoneInfo("Europe/London"))
    assert (gap.value.problem, fold.value.problem) == (SlotProblem.NONEXISTENT, SlotProblem.AMBIGUOUS)
    assert local_time(datetime(2026, 7, 1, 1, 30), ZoneInfo("Europe/London")).utcoffset() == timedelta(hours=1)


ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",  # a 30-minute change
    "America/Santiago",  # changes at midnight
    "Pacific/Chatham",  # a +12:45 / +13:45 offset
    "Asia/Kolkata",  # no changes at all
]
DAYS = st.dates(min_value=date(2026, 1, 1), max_value=date(2026, 12, 31))
FAR_BEFORE = datetime(2025, 12, 31, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), slot_minutes=st.sampled_from([15, 20, 30, 45, 60]), day=DAYS)
def test_every_slot_is_a_real_aligned_time_inside_a_window(zone: str, slot_minutes: int, day: date) -> None:
    grid = SlotGrid(policy(zone, slot_minutes))

    slots = grid.slots_on(day)

    assert slots == sorted(set(slots))
    instants = [slot.astimezone(UTC) for slot in slots]
    assert all(later - earlier >= timedelta(minutes=1) for earlier, later in pairwise(instants))
    for slot in slots:
        wall = slot.replace(tzinfo=None)
        assert wall.date() == day
        assert local_time(wall, grid.zone) == slot  # exists, and only once
        since_open = datetime.combine(day, wall.time()) - datetime.combine(day, time(0))
        assert since_open % timedelta(minutes=slot_minutes) == timedelta(0)
        assert wall + timedelta(minutes=slot_minutes) <= datetime.combine(day, time(4))
        grid.check(slot, FAR_BEFORE)


@settings(max_examples=500, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    slot_minutes=st.sampled_from([15, 30, 45]),
    day=DAYS,
    minute_of_day=st.integers(min_value=0, max_value=24 * 60 - 1),
)
def test_a_wall_time_is_bookable_exactly_when_it_is_a_slot(
    zone: str, slot_minutes: int, day: date, minute_of_day: int
) -> None:
    grid = SlotGrid(policy(zone, slot_minutes))
    wall = datetime.combine(day, time(0)) + timedelta(minutes=minute_of_day)
    slot_walls = {slot.replace(tzinfo=None) for slot in grid.slots_on(day)}

    try:
        grid.check(grid.parse(wall_iso(wall)), FAR_BEFORE)
        bookable = True
    except SlotRefused:
        bookable = False

    assert bookable == (wall in slot_walls)


# -- suggestions --------------------------------------------------------------------------------------------


def test_the_nearest_open_slots_are_offered_in_time_order() -> None:
    grid = SlotGrid(clinic_policy())
    taken = {ny(2026, 3, 3, 10), ny(2026, 3, 3, 9, 30)}

    suggestions = grid.suggest(ny(2026, 3, 3, 10), NOW, lambda day: taken)

    assert suggestions == [ny(2026, 3, 3, 9), ny(2026, 3, 3, 10, 30), ny(2026, 3, 3, 11)]


def test_a_full_day_sends_the_search_to_the_days_around_it() -> None:
    grid = SlotGrid(clinic_policy())
    asked: list[date] = []

    def taken_on(day: date) -> set[datetime]:
        asked.append(day)
        return set(grid.slots_on(day)) if day == date(2026, 3, 4) else set()

    suggestions = grid.suggest(ny(2026, 3, 4, 10), NOW, taken_on)

    assert [slot.date() for slot in suggestions] == [date(2026, 3, 5)] * MAX_SUGGESTIONS
    assert asked == [date(2026, 3, 4), date(2026, 3, 5)]


def test_suggestions_are_never_in_the_past_nor_beyond_the_window() -> None:
    grid = SlotGrid(clinic_policy())

    today = grid.suggest(ny(2026, 3, 2, 9), NOW, lambda day: set())
    far = grid.suggest(ny(2026, 12, 1, 10), NOW, lambda day: set())

    assert today == [ny(2026, 3, 2, 13), ny(2026, 3, 2, 13, 30), ny(2026, 3, 2, 14)]
    assert far
    assert all(slot.date() <= date(2026, 5, 1) for slot in far)
    assert all(slot > NOW for slot in today + far)


def test_no_suggestions_when_everything_nearby_is_taken() -> None:
    grid = SlotGrid(clinic_policy())

    assert grid.suggest(ny(2026, 3, 3, 10), NOW, lambda day: set(grid.slots_on(day))) == []


# -- what the agent says ------------------------------------------------------------------------------------


def test_times_are_said_the_way_people_say_them() -> None:
    assert spoken(ny(2026, 3, 3, 10, 30)) == "Tuesday, March 3 at 10:30 AM"
    assert spoken(ny(2026, 3, 3, 12)) == "Tuesday, March 3 at 12:00 PM"
    assert spoken(ny(2026, 3, 3, 0, 15)) == "Tuesday, March 3 at 12:15 AM"
    assert spoken_list([ny(2026, 3, 3, 9), ny(2026, 3, 3, 9, 30), ny(2026, 3, 4, 13)]) == (
        "Tuesday, March 3 at 9:00 AM or 9:30 AM; Wednesday, March 4 at 1:00 PM"
    )
    assert wall_iso(ny(2026, 3, 3, 9)) == "2026-03-03T09:00"
