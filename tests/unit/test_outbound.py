"""switchboard.outbound: who an agent may call and when, at fixed instants (no clock)."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.agent import Hours
from switchboard.outbound import (
    Callee,
    DialRefused,
    RefusalReason,
    check_callee,
    check_calling_hours,
    do_not_call_table_definition,
    next_allowed_at,
    within_hours,
)

NEW_YORK = "+12125550123"
HONOLULU = "+18085550123"
ALASKA = "+19075550123"  # America/Anchorage and America/Adak, an hour apart
TOLL_FREE = "+18005550123"  # every zone of the North American plan, Guam to Adak
LONDON = "+442071838750"
PREMIUM = "+19005550123"
FREEPHONE_WORLD = "+80012345678"  # valid, country "001", no time zone

NY = ZoneInfo("America/New_York")
NINE_TO_FIVE = Hours(open=time(9), close=time(17))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def refusal(number: str, allowed: list[str]) -> DialRefused:
    with pytest.raises(DialRefused) as caught:
        check_callee(number, allowed)
    return caught.value


# -- the number -----------------------------------------------------------------------------------------


def test_a_valid_number_of_an_allowed_country_passes_with_its_zone() -> None:
    callee = check_callee(NEW_YORK, ["US", "CA"])
    assert callee == Callee(number=NEW_YORK, country="US", time_zones=(NY,))


@pytest.mark.parametrize("number", ["+15550100300", "+1212555012", "+999123456789"])
def test_a_number_that_only_looks_like_e164_is_refused(number: str) -> None:
    assert refusal(number, ["US"]).reason is RefusalReason.INVALID_NUMBER


def test_a_number_of_another_country_is_refused_naming_the_countries_not_the_number() -> None:
    refused = refusal(LONDON, ["US", "CA"])
    assert refused.reason is RefusalReason.COUNTRY_NOT_ALLOWED
    assert "CA, US" in refused.message
    assert "GB" in refused.message
    assert "2071838750" not in refused.message


def test_a_premium_rate_number_is_refused_even_in_an_allowed_country() -> None:
    assert refusal(PREMIUM, ["US"]).reason is RefusalReason.PREMIUM_RATE_NUMBER


def test_a_number_with_no_known_time_zone_is_refused() -> None:
    # Only reachable for a non-geographic "country" (the agent model allows two-letter codes only).
    refused = refusal(FREEPHONE_WORLD, ["001"])
    assert refused.reason is RefusalReason.UNKNOWN_TIME_ZONE


def test_a_number_spanning_zones_keeps_them_all() -> None:
    callee = check_callee(ALASKA, ["US"])
    assert {zone.key for zone in callee.time_zones} == {"America/Anchorage", "America/Adak"}


# -- calling hours --------------------------------------------------------------------------------------


def test_inside_hours_is_read_in_the_callee_zone() -> None:
    # 14:30 UTC in winter is 09:30 in New York: open; 13:30 UTC is 08:30: closed.
    assert within_hours(NINE_TO_FIVE, [NY], at("2026-01-15T14:30:00+00:00"))
    assert not within_hours(NINE_TO_FIVE, [NY], at("2026-01-15T13:30:00+00:00"))


def test_close_is_exclusive() -> None:
    assert not within_hours(NINE_TO_FIVE, [NY], at("2026-01-15T17:00:00-05:00"))
    assert within_hours(NINE_TO_FIVE, [NY], at("2026-01-15T16:59:59-05:00"))


def test_a_naive_instant_is_an_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        within_hours(NINE_TO_FIVE, [NY], datetime(2026, 1, 15, 12))


def test_next_allowed_is_now_when_open() -> None:
    now = at("2026-01-15T10:00:00-05:00")
    assert next_allowed_at(NINE_TO_FIVE, [NY], now) == now


def test_next_allowed_is_the_next_opening_in_the_callee_zone() -> None:
    evening = at("2026-01-15T20:00:00-05:00")
    assert next_allowed_at(NINE_TO_FIVE, [NY], evening) == at("2026-01-16T09:00:00-05:00")
    early = at("2026-01-15T06:00:00-05:00")
    assert next_allowed_at(NINE_TO_FIVE, [NY], early) == at("2026-01-15T09:00:00-05:00")


def test_next_allowed_follows_daylight_saving() -> None:
    # The night before New York springs forward (2026-03-08): 09:00 the next day is UTC-4, not UTC-5.
    night = at("2026-03-07T22:00:00-05:00")
    assert next_allowed_at(NINE_TO_FIVE, [NY], night) == at("2026-03-08T09:00:00-04:00")


def test_an_opening_skipped_by_spring_forward_opens_at_the_jump() -> None:
    # 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT, so 02:30 never happens; 03:00 EDT is the first
    # moment past it.
    hours = Hours(open=time(2, 30), close=time(4))
    assert next_allowed_at(hours, [NY], at("2026-03-08T01:00:00-05:00")) == at("2026-03-08T03:00:00-04:00")


def test_an_opening_repeated_by_fall_back_opens_twice() -> None:
    # 2026-11-01 in New York: 01:00-01:59 happens in EDT, then again in EST.
    hours = Hours(open=time(1), close=time(1, 30))
    between_passes = at("2026-11-01T01:45:00-04:00")
    assert next_allowed_at(hours, [NY], between_passes) == at("2026-11-01T01:00:00-05:00")


def test_a_window_reentered_by_fall_back_opens_at_the_clock_change() -> None:
    # 2028-11-05: Anchorage falls back at 10:00 UTC (02:00 AKDT -> 01:00 AKST), Adak at 11:00 UTC. From
    # 10:00 to 10:01 UTC both clocks read 01:00 (Anchorage's second pass, Adak's first): inside 00:01-01:01
    # in both, the only such minute, and it starts at Anchorage's clock change, not at an opening.
    hours = Hours(open=time(0, 1), close=time(1, 1))
    zones = check_callee(ALASKA, ["US"]).time_zones
    found = next_allowed_at(hours, zones, at("2028-11-03T10:01:00+00:00"))
    assert found == at("2028-11-05T10:00:00+00:00")
    assert not within_hours(hours, zones, at("2028-11-05T09:59:59+00:00"))
    assert not within_hours(hours, zones, at("2028-11-05T10:01:00+00:00"))


def test_every_zone_of_a_number_must_be_open() -> None:
    zones = check_callee(ALASKA, ["US"]).time_zones
    # 09:30 in Anchorage is 08:30 in Adak: not yet.
    anchorage_morning = at("2026-01-15T09:30:00-09:00")
    assert not within_hours(NINE_TO_FIVE, zones, anchorage_morning)
    assert next_allowed_at(NINE_TO_FIVE, zones, anchorage_morning) == at("2026-01-15T09:00:00-10:00")


def test_a_window_the_zones_never_share_has_no_next_allowed_moment() -> None:
    half_hour = Hours(open=time(0), close=time(0, 30))
    callee = check_callee(ALASKA, ["US"])
    with pytest.raises(DialRefused) as caught:
        check_calling_hours(half_hour, callee, at("2026-01-15T00:10:00-09:00"))
    assert caught.value.reason is RefusalReason.OUTSIDE_CALLING_HOURS
    assert caught.value.next_allowed_at is None
    assert "never open" in caught.value.message


def test_a_toll_free_number_is_called_only_when_guam_to_adak_are_all_open() -> None:
    zones = check_callee(TOLL_FREE, ["US"]).time_zones
    wide = Hours(open=time(0), close=time(23, 59))
    # Twenty hours between Guam and Adak leave a few hours a day when every zone is inside 00:00-23:59.
    found = next_allowed_at(wide, zones, at("2026-01-15T12:00:00+00:00"))
    assert found is not None
    assert within_hours(wide, zones, found)
    assert next_allowed_at(NINE_TO_FIVE, zones, at("2026-01-15T12:00:00+00:00")) is None


def test_check_calling_hours_refuses_with_the_next_allowed_moment() -> None:
    callee = check_callee(NEW_YORK, ["US"])
    check_calling_hours(NINE_TO_FIVE, callee, at("2026-01-15T12:00:00-05:00"))
    with pytest.raises(DialRefused) as caught:
        check_calling_hours(NINE_TO_FIVE, callee, at("2026-01-15T18:00:00-05:00"))
    assert caught.value.reason is RefusalReason.OUTSIDE_CALLING_HOURS
    assert caught.value.next_allowed_at == at("2026-01-16T09:00:00-05:00")
    assert "America/New_York" in caught.value.message


ZONE_SETS = [
    (NY,),
    (ZoneInfo("Pacific/Honolulu"),),
    (ZoneInfo("America/Anchorage"), ZoneInfo("America/Adak")),
    (ZoneInfo("Europe/London"), ZoneInfo("Europe/Paris")),
    (ZoneInfo("Australia/Perth"), ZoneInfo("Australia/Sydney"), ZoneInfo("Australia/Lord_Howe")),
]


@settings(max_examples=300, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)),
    open_minute=st.integers(min_value=0, max_value=22 * 60),
    length=st.integers(min_value=30, max_value=12 * 60),
    zones=st.sampled_from(ZONE_SETS),
)
def test_next_allowed_is_open_and_nothing_earlier_was(
    start: datetime, open_minute: int, length: int, zones: tuple[ZoneInfo, ...]
) -> None:
    close_minute = min(open_minute + length, 23 * 60 + 59)
    hours = Hours(open=time(open_minute // 60, open_minute % 60), close=time(close_minute // 60, close_minute % 60))
    found = next_allowed_at(hours, zones, start)
    if found is None:
        # Nothing in the next week: check every minute of the next two days is closed somewhere.
        probe = start
        while probe < start + timedelta(days=2):
            assert not within_hours(hours, zones, probe)
            probe += timedelta(minutes=1)
        return
    assert found >= start
    assert within_hours(hours, zones, found)
    # Just before it (when later than start), some zone was still closed.
    if found > start:
        assert not within_hours(hours, zones, max(start, found - timedelta(seconds=1)))


def test_do_not_call_table_is_keyed_by_phone() -> None:
    definition = do_not_call_table_definition("switchboard-dnc")
    assert definition["TableName"] == "switchboard-dnc"
    assert definition["KeySchema"] == [{"AttributeName": "phone", "KeyType": "HASH"}]
