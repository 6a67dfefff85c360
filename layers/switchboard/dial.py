"""A dial: the request to call one number with one agent, and the intent that records what became of it.

Every dial leaves a dial intent in the calls table before anything else happens, so that a request is
never lost, whatever fails later (a policy, the pacing, Twilio, our own Lambda):

    received  → the request is recorded; nothing was asked of Twilio yet, so it may be taken up again
                (also where a dial from the API stays when no pacing slot was free: its retry takes it up)
    dialing   → Twilio is being asked; only the one writer who moved it here may ask
    dialed    → Twilio accepted the call (call_sid)
    failed    → Twilio refused it (twilio_code) or could not be reached: whether it placed the call is
                then unknown, so the dial is not repeated (if it did, the voice webhook records the call)
    refused   → a policy said no (reason, and next_allowed_at for calling hours)
    deferred  → a scheduled dial outside calling hours (or pacing): a new one-time schedule dials it later

A dial intent is keyed by its dial id, so a dial id is dialed at most once: a repeated request (a
client's retry, a second delivery by EventBridge Scheduler) gets the recorded outcome back.
"""

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from switchboard.call import AgentId
from switchboard.phone import E164

FactKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
FactValue = Annotated[str, StringConstraints(max_length=200)]
# What the agent is told about the call (a patient's name, the appointment being confirmed): short and few,
# since they travel in schedule payloads and into the prompt.
Facts = Annotated[dict[FactKey, FactValue], Field(max_length=20)]
DialId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
DialSource = Literal["api", "schedule"]


class DialRequest(BaseModel):
    """Call one number now. The body of POST /calls, and one entry of a schedule's payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: AgentId = Field(examples=["appointment-reminder"])
    to: E164 = Field(description="The callee, E.164.", examples=["+12125550123"])
    facts: Facts = Field(
        default_factory=dict,
        description="What the agent knows about this call: at most 20 entries, keys snake_case, values ≤ 200 chars.",
        examples=[{"patient_name": "Ada Lovelace", "appointment_start": "2026-03-03T10:30:00-05:00"}],
    )
    attempt: int = Field(default=1, ge=1, le=10, description="Which attempt this is; retries count up.")
    dial_id: DialId | None = Field(
        default=None,
        description="Idempotency key: one dial per dial_id; a repeat returns the recorded outcome. Default: generated.",
    )


class ScheduledDial(DialRequest):
    """A dial as EventBridge Scheduler delivers it: the DialRequest, plus the time the schedule fired.

    Schedules created by POST /schedules carry `"scheduled_time": "<aws.scheduler.scheduled-time>"`, which
    Scheduler fills in, so every firing of a recurring schedule is a dial of its own while a second
    delivery of one firing is the same dial.
    """

    scheduled_time: AwareDatetime | None = None

    def intent_id(self) -> str:
        """The dial intent's key: stable across deliveries of one firing, distinct between firings."""
        if self.dial_id is None:
            # A payload written by hand without a dial id: its content is the only stable identity it has.
            digest = hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:32]
            return f"sched-{digest}"
        if self.scheduled_time is None:
            return self.dial_id
        return f"{self.dial_id}@{self.scheduled_time.astimezone(UTC):%Y%m%dT%H%M%SZ}"


class DialStatus(StrEnum):
    RECEIVED = "received"
    DIALING = "dialing"
    DIALED = "dialed"
    FAILED = "failed"
    REFUSED = "refused"
    DEFERRED = "deferred"

    @property
    def is_settled(self) -> bool:
        """Nothing more will happen to this dial intent."""
        return self not in (DialStatus.RECEIVED, DialStatus.DIALING)


class DialIntent(BaseModel):
    """The durable record of one dial, written before anything is asked of Twilio."""

    model_config = ConfigDict(frozen=True)

    dial_id: str
    agent_id: str
    to_number: str
    from_number: str | None = None
    attempt: int = Field(ge=1)
    facts: dict[str, str] = Field(default_factory=dict)
    source: DialSource
    status: DialStatus
    requested_at: datetime
    updated_at: datetime
    call_sid: str | None = None
    # Why it was refused (a RefusalReason), failed (twilio_error, twilio_unreachable) or deferred
    # (outside_calling_hours, rate_limited).
    reason: str | None = None
    message: str | None = None
    next_allowed_at: datetime | None = None
    twilio_code: int | None = None
    twilio_status: int | None = None
    # The one-time schedule that dials it later, when deferred.
    deferred_to: str | None = None
    # The second (epoch) the pacing gave this dial's calls.create.
    pacing_second: int | None = None

    def asks_the_same(self, other: "DialIntent") -> bool:
        """The same request under one dial id (a replay), rather than a different one reusing the id."""
        fields = ("agent_id", "to_number", "attempt", "facts")
        return all(getattr(self, name) == getattr(other, name) for name in fields)
