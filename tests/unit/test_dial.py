"""switchboard.dial: dial requests and the identity of a scheduled dial."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from switchboard.dial import DialIntent, DialRequest, DialStatus, ScheduledDial

NOW = datetime(2026, 3, 2, 15, tzinfo=UTC)


def intent(**fields: object) -> DialIntent:
    base: dict[str, object] = {
        "dial_id": "d1",
        "agent_id": "appointment-reminder",
        "to_number": "+12125550123",
        "attempt": 1,
        "facts": {"patient_name": "Ada"},
        "source": "api",
        "status": DialStatus.RECEIVED,
        "requested_at": NOW,
        "updated_at": NOW,
    }
    return DialIntent.model_validate({**base, **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"to": "2125550123"},
        {"to": "+0125550123"},
        {"attempt": 0},
        {"attempt": 11},
        {"facts": {f"k{n}": "v" for n in range(21)}},
        {"facts": {"name": "x" * 201}},
        {"facts": {"Name": "x"}},
        {"dial_id": "has space"},
        {"agent_id": "Not An Id"},
        {"scheduled_time": "2026-03-02T15:00:00Z"},
    ],
)
def test_a_bad_dial_request_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DialRequest.model_validate({"agent_id": "appointment-reminder", "to": "+12125550123", **fields})


def test_a_scheduled_dial_is_its_dial_id_per_firing() -> None:
    plain = ScheduledDial(agent_id="a", to="+12125550123", dial_id="retry-CA1")
    assert plain.intent_id() == "retry-CA1"
    fired = ScheduledDial.model_validate(
        {"agent_id": "a", "to": "+12125550123", "dial_id": "camp.3", "scheduled_time": "2026-03-02T10:00:00-05:00"}
    )
    assert fired.intent_id() == "camp.3@20260302T150000Z"


def test_a_hand_written_scheduled_dial_without_an_id_is_named_by_its_content() -> None:
    first = ScheduledDial(agent_id="a", to="+12125550123")
    again = ScheduledDial(agent_id="a", to="+12125550123")
    other = ScheduledDial(agent_id="a", to="+14155550123")
    assert first.intent_id() == again.intent_id() != other.intent_id()
    assert first.intent_id().startswith("sched-")


def test_a_replay_asks_the_same_whatever_its_state() -> None:
    assert intent().asks_the_same(intent(status=DialStatus.DIALED, call_sid="CA1", from_number="+15550100300"))
    assert not intent().asks_the_same(intent(to_number="+14155550123"))
    assert not intent().asks_the_same(intent(attempt=2))
    assert not intent().asks_the_same(intent(facts={}))


def test_settled_states() -> None:
    assert {status for status in DialStatus if not status.is_settled} == {DialStatus.RECEIVED, DialStatus.DIALING}
