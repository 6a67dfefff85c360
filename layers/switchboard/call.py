"""A phone call: who, which agent, and how its status moved."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from switchboard.phone import E164

CallSid = Annotated[str, StringConstraints(pattern=r"^CA[0-9a-f]{32}$")]
AgentId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]

_CALL_SID: TypeAdapter[str] = TypeAdapter(CallSid)


def valid_call_sid(value: str) -> str:
    """`value` if it is a CallSid, else pydantic's ValidationError: for sids that reach keys and tokens."""
    return _CALL_SID.validate_python(value)


class CallDirection(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallStatus(StrEnum):
    """Twilio's CallStatus values, plus `queued` for an outbound call we recorded before dialing."""

    QUEUED = "queued"
    INITIATED = "initiated"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATUSES


_FINAL_STATUSES = frozenset(
    {CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.FAILED, CallStatus.NO_ANSWER, CallStatus.CANCELED}
)


class StatusEvent(BaseModel):
    """One status callback from Twilio. SequenceNumber orders them; they may arrive late or twice."""

    model_config = ConfigDict(frozen=True)

    status: CallStatus
    sequence_number: int = Field(ge=0)
    at: datetime
    duration_s: int | None = Field(default=None, ge=0)
    answered_by: str | None = None
    price: str | None = None
    price_unit: str | None = None


class CallParties(BaseModel):
    """Which call, between whom, handled by which agent: shared by the durable record and the live state."""

    call_sid: CallSid
    direction: CallDirection
    from_number: E164
    to_number: E164
    agent_id: AgentId

    @property
    def customer_number(self) -> str:
        """The other party: the caller of an inbound call, the callee of an outbound one."""
        return self.from_number if self.direction is CallDirection.INBOUND else self.to_number


class Call(CallParties):
    """The durable record of one call."""

    status: CallStatus = CallStatus.QUEUED
    status_history: list[StatusEvent] = Field(default_factory=list)
    created_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: int | None = Field(default=None, ge=0)
    answered_by: str | None = None
    # Set once when the conversation is over on our side (the agent ended it, a transfer, idle, max
    # duration), so that /twilio/stream-ended hangs up instead of resuming the stream.
    conversation_ended: str | None = None
    # Streams connected after a drop; /twilio/stream-ended stops resuming at the configured cap.
    stream_resumes: int = Field(default=0, ge=0)
    # Outbound only: which attempt this is (retries of busy/no-answer count up) and the facts the
    # request gave the agent (a patient's name, the appointment being confirmed: `appointment_start`).
    attempt: int = Field(default=1, ge=1)
    facts: dict[str, str] = Field(default_factory=dict)
