"""Twilio's webhook requests (voice, stream ended, answering machine detection, call status) as pydantic models.

Twilio posts `application/x-www-form-urlencoded` bodies with CamelCase names. Only the fields Switchboard
reads are declared; the others are ignored here but still covered by the signature check, which reads
the whole form (switchboard.twilio_webhook). Phone numbers stay plain strings at this edge: Twilio sends
placeholders such as `anonymous` for a withheld caller, and deciding what to do with one is the
handler's business, not a validation error.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from switchboard.call import CallDirection, CallSid, CallStatus

# Twilio's Direction values and what they are to us. `outbound-dial` is a leg that a <Dial> started.
_DIRECTIONS = {
    "inbound": CallDirection.INBOUND,
    "outbound-api": CallDirection.OUTBOUND,
    "outbound-dial": CallDirection.OUTBOUND,
}

# AnsweredBy values of answering machine detection that mean a machine's greeting has ended
# (MachineDetection=DetectMessageEnd): the moment to leave a message or hang up.
MACHINE_MESSAGE_END = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})

_FINAL_STATUS_VALUES = frozenset(status.value for status in CallStatus if status.is_final)


def call_direction(twilio_direction: str) -> CallDirection | None:
    """Our direction for Twilio's `Direction` value; None for one Switchboard does not handle (SIP trunking)."""
    return _DIRECTIONS.get(twilio_direction)


def _rfc2822(value: Any) -> Any:
    """Twilio's Timestamp ("Tue, 24 Nov 2026 11:45:08 +0000") as an aware datetime."""
    if not isinstance(value, str):
        return value
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError) as exc:
        raise ValueError("not an RFC 2822 date") from exc
    # `-0000` ("no zone information") parses naive; Twilio's clocks are UTC.
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


Rfc2822Datetime = Annotated[datetime, BeforeValidator(_rfc2822)]


class TwilioForm(BaseModel):
    """A Twilio webhook form: one value per name."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _one_value_per_name(cls, data: Any) -> Any:
        # Powertools hands a form over as parse_qs does, every value in a list. Twilio sends each name
        # once; a name sent twice is left a list, which fails validation instead of picking one. A blank
        # value (Twilio sends `AnsweredBy=` before detection is done) counts as absent.
        if not isinstance(data, Mapping):
            return data
        values = {
            name: value[0] if isinstance(value, list) and len(value) == 1 else value for name, value in data.items()
        }
        return {name: value for name, value in values.items() if value != ""}


class CallForm(TwilioForm):
    """The parameters Twilio sends with every request about a call."""

    call_sid: CallSid = Field(alias="CallSid")
    account_sid: str = Field(alias="AccountSid", pattern=r"^AC[0-9a-fA-F]{32}$")


class _CallInProgressForm(CallForm):
    call_status: str | None = Field(default=None, alias="CallStatus", max_length=32)

    @property
    def final_status(self) -> bool:
        """Whether CallStatus says the call is over (completed, busy, failed, no-answer, canceled)."""
        return self.call_status in _FINAL_STATUS_VALUES


class VoiceRequest(_CallInProgressForm):
    """POST /twilio/voice: a call to answer, inbound or an outbound call the callee picked up."""

    from_number: str = Field(alias="From", max_length=256)
    to_number: str = Field(alias="To", max_length=256)
    direction: str = Field(alias="Direction", max_length=32, examples=["inbound", "outbound-api"])


class StreamEndedRequest(_CallInProgressForm):
    """POST /twilio/stream-ended: the <Connect action>, requested when the media stream has ended."""


class MachineDetection(_CallInProgressForm):
    """POST /twilio/amd: the asynchronous answering machine detection result of an outbound call."""

    answered_by: str = Field(
        alias="AnsweredBy",
        max_length=64,
        examples=["human", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax", "unknown"],
    )
    machine_detection_duration_ms: int | None = Field(default=None, alias="MachineDetectionDuration", ge=0)

    @property
    def machine_message_ended(self) -> bool:
        return self.answered_by in MACHINE_MESSAGE_END


class StatusCallback(CallForm):
    """POST /twilio/status: one call status callback (initiated, ringing, answered, completed)."""

    call_status: CallStatus = Field(alias="CallStatus")
    sequence_number: int | None = Field(default=None, alias="SequenceNumber", ge=0)
    timestamp: Rfc2822Datetime | None = Field(
        default=None, alias="Timestamp", examples=["Tue, 24 Nov 2026 11:45:08 +0000"]
    )
    call_duration_s: int | None = Field(default=None, alias="CallDuration", ge=0)
    answered_by: str | None = Field(default=None, alias="AnsweredBy", max_length=64)
    price: str | None = Field(default=None, alias="Price", max_length=32)
    price_unit: str | None = Field(default=None, alias="PriceUnit", max_length=8)
    from_number: str | None = Field(default=None, alias="From", max_length=256)
    to_number: str | None = Field(default=None, alias="To", max_length=256)
    direction: str | None = Field(default=None, alias="Direction", max_length=32)

    @property
    def final_status(self) -> bool:
        return self.call_status.is_final
