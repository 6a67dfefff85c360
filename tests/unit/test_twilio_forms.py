"""Twilio's webhook forms as they come out of Powertools' form parsing (every value in a list)."""

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlencode

import pytest
from pydantic import ValidationError

from switchboard.call import Call, CallDirection, CallStatus
from switchboard.status_callbacks import completed_facts, status_event
from switchboard.twilio_forms import MachineDetection, StatusCallback, VoiceRequest, call_direction

SID = "CA" + "0123456789abcdef" * 2
ACCOUNT = "AC" + "0" * 31 + "1"


def parsed(body: str) -> dict[str, list[str]]:
    return parse_qs(body, keep_blank_values=True)


def test_a_voice_request_takes_one_value_per_name_and_ignores_the_rest() -> None:
    form = VoiceRequest.model_validate(
        parsed(
            f"CallSid={SID}&AccountSid={ACCOUNT}&From=%2B15557654321&To=%2B15550100200&Direction=inbound&CallStatus=ringing&CallerCity=X"
        )
    )
    assert (form.call_sid, form.from_number, form.to_number, form.direction) == (
        SID,
        "+15557654321",
        "+15550100200",
        "inbound",
    )
    assert form.final_status is False


def test_a_name_sent_twice_is_refused() -> None:
    with pytest.raises(ValidationError):
        VoiceRequest.model_validate(parsed(f"CallSid={SID}&AccountSid={ACCOUNT}&From=a&To=b&To=c&Direction=inbound"))


def test_a_malformed_call_sid_is_refused() -> None:
    with pytest.raises(ValidationError):
        MachineDetection.model_validate(parsed(f"CallSid=CA123&AccountSid={ACCOUNT}&AnsweredBy=human"))


@pytest.mark.parametrize(
    ("answered_by", "machine"),
    [
        ("machine_end_beep", True),
        ("machine_end_silence", True),
        ("machine_end_other", True),
        ("machine_start", False),
        ("human", False),
        ("fax", False),
        ("unknown", False),
    ],
)
def test_machine_message_end(answered_by: str, machine: bool) -> None:
    form = MachineDetection.model_validate(parsed(f"CallSid={SID}&AccountSid={ACCOUNT}&AnsweredBy={answered_by}"))
    assert form.machine_message_ended is machine


@pytest.mark.parametrize(
    ("value", "direction"),
    [
        ("inbound", CallDirection.INBOUND),
        ("outbound-api", CallDirection.OUTBOUND),
        ("outbound-dial", CallDirection.OUTBOUND),
        ("trunking-originating", None),
    ],
)
def test_call_direction(value: str, direction: CallDirection | None) -> None:
    assert call_direction(value) is direction


def status_form(**overrides: str) -> StatusCallback:
    fields = {
        "CallSid": SID,
        "AccountSid": ACCOUNT,
        "CallStatus": "completed",
        "SequenceNumber": "3",
        "Timestamp": "Tue, 24 Nov 2026 11:45:08 +0000",
        "CallDuration": "42",
        **overrides,
    }
    return StatusCallback.model_validate(parsed(urlencode(fields)))


def test_a_status_callback_reads_twilios_rfc2822_timestamp() -> None:
    form = status_form()
    assert form.timestamp == datetime(2026, 11, 24, 11, 45, 8, tzinfo=UTC)
    assert form.call_status is CallStatus.COMPLETED
    assert form.final_status
    assert form.call_duration_s == 42


def test_a_timestamp_with_another_offset_or_no_zone() -> None:
    assert status_form(Timestamp="Tue, 24 Nov 2026 06:45:08 -0500").timestamp == datetime(
        2026, 11, 24, 6, 45, 8, tzinfo=timezone(timedelta(hours=-5))
    )
    assert status_form(Timestamp="Tue, 24 Nov 2026 11:45:08 -0000").timestamp == datetime(
        2026, 11, 24, 11, 45, 8, tzinfo=UTC
    )


@pytest.mark.parametrize("timestamp", ["yesterday", "2026-11-24T11:45:08Z", ""])
def test_a_timestamp_that_is_not_rfc2822_is_refused_or_absent(timestamp: str) -> None:
    body = f"CallSid={SID}&AccountSid={ACCOUNT}&CallStatus=ringing&Timestamp={timestamp}"
    if timestamp == "":
        assert StatusCallback.model_validate(parsed(body)).timestamp is None
        return
    with pytest.raises(ValidationError):
        StatusCallback.model_validate(parsed(body))


def test_blank_values_count_as_absent() -> None:
    form = StatusCallback.model_validate(
        parsed(f"CallSid={SID}&AccountSid={ACCOUNT}&CallStatus=ringing&AnsweredBy=&CallDuration=")
    )
    assert (form.answered_by, form.call_duration_s) == (None, None)


def test_status_event_carries_everything_the_callback_says() -> None:
    received = datetime(2030, 1, 1, tzinfo=UTC)
    event = status_event(status_form(Price="-0.0085", PriceUnit="USD", AnsweredBy="human"), received)
    assert event.model_dump() == {
        "status": CallStatus.COMPLETED,
        "sequence_number": 3,
        "at": datetime(2026, 11, 24, 11, 45, 8, tzinfo=UTC),
        "duration_s": 42,
        "answered_by": "human",
        "price": "-0.0085",
        "price_unit": "USD",
    }


@pytest.mark.parametrize(
    ("status", "sequence"),
    [("initiated", 0), ("ringing", 1), ("in-progress", 2), ("completed", 3), ("no-answer", 3), ("canceled", 3)],
)
def test_a_callback_without_sequence_number_or_timestamp_gets_twilios_usual_ones(status: str, sequence: int) -> None:
    received = datetime(2030, 1, 1, tzinfo=UTC)
    form = StatusCallback.model_validate(parsed(f"CallSid={SID}&AccountSid={ACCOUNT}&CallStatus={status}"))
    event = status_event(form, received)
    assert (event.sequence_number, event.at) == (sequence, received)


def test_completed_facts_name_no_party() -> None:
    call = Call(
        call_sid=SID,
        direction=CallDirection.OUTBOUND,
        from_number="+15550100300",
        to_number="+15557654321",
        agent_id="appointment-reminder",
        created_at=datetime(2026, 11, 24, tzinfo=UTC),
        status=CallStatus.NO_ANSWER,
        attempt=2,
    )
    event = status_event(status_form(CallStatus="no-answer", CallDuration="0"), datetime(2030, 1, 1, tzinfo=UTC))
    assert completed_facts(call, event) == {
        "status": "no-answer",
        "direction": "outbound",
        "duration_s": 0,
        "answered_by": None,
        "attempt": 2,
    }
