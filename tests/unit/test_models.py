from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from switchboard.call import Call, CallDirection, CallStatus
from switchboard.turn import Role, Turn

SID = "CA" + "0123456789abcdef" * 2
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def _call(direction: CallDirection) -> Call:
    return Call(
        call_sid=SID,
        direction=direction,
        from_number="+14155550123",
        to_number="+15550100200",
        agent_id="clinic-receptionist",
        created_at=T0,
    )


def test_customer_number_is_the_other_party() -> None:
    assert _call(CallDirection.INBOUND).customer_number == "+14155550123"
    assert _call(CallDirection.OUTBOUND).customer_number == "+15550100200"


def test_final_statuses() -> None:
    finals = {s for s in CallStatus if s.is_final}
    assert finals == {"completed", "busy", "failed", "no-answer", "canceled"}


@pytest.mark.parametrize("sid", ["CA123", "XX" + "0" * 32, "CA" + "G" * 32])
def test_call_sid_is_validated(sid: str) -> None:
    with pytest.raises(ValidationError, match="call_sid"):
        Call(
            call_sid=sid,
            direction=CallDirection.INBOUND,
            from_number="+14155550123",
            to_number="+15550100200",
            agent_id="a",
            created_at=T0,
        )


def test_interrupted_turn_speaks_what_was_heard() -> None:
    turn = Turn(
        call_sid=SID,
        index=3,
        role=Role.ASSISTANT,
        text="We are open until five. Would you like to book?",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=2),
        interrupted=True,
        heard_text="We are open until five.",
    )
    assert turn.spoken_text == "We are open until five."


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"heard_text": "half"}, "heard_text is only for interrupted turns"),
        ({"role": Role.USER, "interrupted": True}, "only agent turns are interrupted"),
        ({"ended_at": T0 - timedelta(seconds=1)}, "ended_at is before started_at"),
    ],
)
def test_turn_consistency(changes: dict[str, object], reason: str) -> None:
    base: dict[str, object] = {
        "call_sid": SID,
        "index": 0,
        "role": Role.ASSISTANT,
        "text": "Hello.",
        "started_at": T0,
        "ended_at": T0,
    }
    with pytest.raises(ValidationError, match=reason):
        Turn.model_validate({**base, **changes})
