"""switchboard.schedules: schedule requests, expressions and payloads (no Scheduler: see tests/functions)."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from switchboard.dial import DialRequest, ScheduledDial
from switchboard.schedules import (
    MAX_INPUT_BYTES,
    SCHEDULED_TIME_PLACEHOLDER,
    ScheduleRequest,
    ScheduleTooLarge,
    at_expression,
    dial_input,
    retry_schedule_name,
)

LATER = datetime.now(UTC) + timedelta(days=1)
NUMBERS = ["+12125550123", "+14155550123"]


def request(**fields: object) -> ScheduleRequest:
    return ScheduleRequest.model_validate({"agent_id": "appointment-reminder", "to": NUMBERS, **fields})


def problems(**fields: object) -> str:
    with pytest.raises(ValidationError) as caught:
        request(**fields)
    return str(caught.value)


def test_at_expression_is_local_wall_time_in_the_schedule_zone() -> None:
    when = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    assert at_expression(when) == "at(2026-03-02T15:00:00)"
    assert at_expression(when, "America/New_York") == "at(2026-03-02T10:00:00)"


def test_at_expression_rounds_a_fraction_up_never_early() -> None:
    assert at_expression(datetime(2026, 3, 2, 15, 0, 0, 1, tzinfo=UTC)) == "at(2026-03-02T15:00:01)"


def test_at_expression_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        at_expression(datetime(2026, 3, 2, 15))


def test_a_one_time_request() -> None:
    at = LATER.astimezone(timezone(timedelta(hours=-5)))
    scheduled = request(at=at.isoformat(), timezone="America/New_York")
    assert scheduled.at == at
    assert scheduled.cron is None


@pytest.mark.parametrize(
    ("cron", "normalised"),
    [
        ("cron(0 10 ? * MON-FRI *)", "cron(0 10 ? * MON-FRI *)"),
        ("30 9,16 1 * ? *", "cron(30 9,16 1 * ? *)"),
        ("cron( 0  10 ? * 2#1 * )", "cron(0 10 ? * 2#1 *)"),
    ],
)
def test_a_recurring_request_normalises_its_cron(cron: str, normalised: str) -> None:
    assert request(cron=cron, timezone="Europe/London").cron == normalised


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of `at`"),
        ({"at": LATER.isoformat(), "cron": "cron(0 10 ? * MON *)"}, "exactly one of `at`"),
        ({"at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}, "must be in the future"),
        ({"at": "2030-01-01T10:00:00"}, "timezone"),
        ({"cron": "cron(* 10 ? * MON *)"}, "minutes must be one number"),
        ({"cron": "cron(0/5 * ? * MON *)"}, "minutes must be one number"),
        ({"cron": "cron(0 * ? * MON *)"}, "minutes must be one number"),
        ({"cron": "cron(0 10 * * MON *)"}, "exactly one of day-of-month and day-of-week"),
        ({"cron": "cron(0 10 ? * ? *)"}, "exactly one of day-of-month and day-of-week"),
        ({"cron": "cron(0 10 * *)"}, "six fields"),
        ({"cron": "rate(1 hour)"}, "expected cron("),
        ({"cron": "cron(0 10 ? * MON *)", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "cron(0 10 ? * MON *)", "name": "has space"}, "name"),
        ({"cron": "cron(0 10 ? * MON *)", "to": []}, "to"),
        ({"cron": "cron(0 10 ? * MON *)", "to": ["+12125550123"] * 2}, "more than once"),
        ({"cron": "cron(0 10 ? * MON *)", "to": ["2125550123"]}, "to.0"),
        ({"cron": "cron(0 10 ? * MON *)", "facts": {"Bad Key": "x"}}, "facts"),
        ({"cron": "cron(0 10 ? * MON *)", "surprise": 1}, "surprise"),
    ],
)
def test_a_bad_request_is_refused_with_the_reason(fields: dict[str, object], message: str) -> None:
    assert message in problems(**fields)


def test_a_hundred_numbers_at_most() -> None:
    many = [f"+1212555{n:04d}" for n in range(101)]
    assert "at most 100" in problems(cron="cron(0 10 ? * MON *)", to=many)


def test_one_dial_is_an_object_several_a_list() -> None:
    one = DialRequest(agent_id="a", to=NUMBERS[0], dial_id="s.0")
    two = DialRequest(agent_id="a", to=NUMBERS[1], dial_id="s.1", facts={"name": "Ada"})
    assert json.loads(dial_input([one], stamp_scheduled_time=False)) == {
        "agent_id": "a",
        "to": NUMBERS[0],
        "facts": {},
        "attempt": 1,
        "dial_id": "s.0",
    }
    stamped = json.loads(dial_input([one, two], stamp_scheduled_time=True))
    assert [entry["dial_id"] for entry in stamped] == ["s.0", "s.1"]
    assert all(entry["scheduled_time"] == SCHEDULED_TIME_PLACEHOLDER for entry in stamped)


def test_the_payload_as_scheduler_fills_it_in_reads_back_as_scheduled_dials() -> None:
    dial = DialRequest(agent_id="a", to=NUMBERS[0], dial_id="s.0")
    text = dial_input([dial], stamp_scheduled_time=True).replace(SCHEDULED_TIME_PLACEHOLDER, "2026-03-02T15:00:00Z")
    scheduled = ScheduledDial.model_validate_json(text)
    assert scheduled.scheduled_time == datetime(2026, 3, 2, 15, tzinfo=UTC)
    assert scheduled.intent_id() == "s.0@20260302T150000Z"


def test_a_payload_lambda_could_not_take_is_refused() -> None:
    facts = {f"fact_{n}": "x" * 200 for n in range(20)}
    dials = [DialRequest(agent_id="a", to=f"+1212555{n:04d}", facts=facts) for n in range(100)]
    with pytest.raises(ScheduleTooLarge, match=str(MAX_INPUT_BYTES)):
        dial_input(dials, stamp_scheduled_time=True)


def test_retry_schedule_names_fit_scheduler() -> None:
    name = retry_schedule_name("CA" + "f" * 32)
    assert len(name) <= 64
