"""Call status callbacks (POST /twilio/status) into the call record, and CallCompleted once per call.

Twilio sends initiated, ringing, answered (`in-progress`) and a final status (completed, busy, failed,
no-answer, canceled), possibly late, twice, or at the same time. `CallRecords.apply_status` orders them
by SequenceNumber, so any order of delivery leaves the same record. The final status publishes
CallCompleted through a claim on the call item (switchboard.publication): once, whatever the deliveries.

A callback for a call with no record:
- inbound: the voice webhook had not recorded it yet, or lost it; the call is recorded from the
  callback (agent: the one answering the called number), then the status applied.
- outbound, before the final status: most likely the dialer has not written its record yet (Twilio
  reports `initiated` as soon as it dials). Writing a record here would take the CallSid from the
  dialer's, with the call's attempt and facts, so only the status event is stored; it joins the
  call's history when the dialer's record lands.
- outbound, final: the dialer's write is lost for good; the call is recorded from the callback (agent:
  the only one whose outbound number placed it) so the outcome and CallCompleted are not lost.
When no agent can be told, the status event is still stored and the callback logged and answered 200.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from switchboard.agent import AgentConfig, AgentDirectory
from switchboard.call import Call, CallDirection, CallStatus, StatusEvent
from switchboard.events import CallEvent, CallEvents, CallEventType
from switchboard.observability import logger, metrics
from switchboard.publication import publish_once
from switchboard.records import CallNotFound, CallRecords, ConflictingRecord
from switchboard.twilio_forms import StatusCallback

# Twilio numbers a call's callbacks 0, 1, 2, 3 for initiated, ringing, answered, final. A callback
# without SequenceNumber (a number's own status callback URL sends only the final one) gets the same.
_SEQUENCE_OF_STATUS = {CallStatus.QUEUED: 0, CallStatus.INITIATED: 0, CallStatus.RINGING: 1, CallStatus.IN_PROGRESS: 2}
_FINAL_SEQUENCE = 3


class StatusOutcome(StrEnum):
    APPLIED = "applied"
    REPLAY = "replay"
    CONFLICT = "conflict"  # another event with this SequenceNumber was recorded first; it stands
    STORED_BEFORE_CALL = "stored_before_call"  # the status event waits for its call record
    NO_AGENT = "no_agent"  # unrecorded call whose agent cannot be told


def status_event(callback: StatusCallback, received_at: datetime) -> StatusEvent:
    """The StatusEvent of a callback. `received_at` stands in for a missing Timestamp."""
    sequence = callback.sequence_number
    if sequence is None:
        sequence = _FINAL_SEQUENCE if callback.call_status.is_final else _SEQUENCE_OF_STATUS[callback.call_status]
    return StatusEvent(
        status=callback.call_status,
        sequence_number=sequence,
        at=callback.timestamp or received_at,
        duration_s=callback.call_duration_s,
        answered_by=callback.answered_by,
        price=callback.price,
        price_unit=callback.price_unit,
    )


def completed_facts(call: Call, event: StatusEvent) -> dict[str, object]:
    """CallCompleted's facts: what subscribers (the dialer's retries, analytics) need, no phone numbers."""
    status = call.status if call.status.is_final else event.status
    return {
        "status": status.value,
        "direction": call.direction.value,
        "duration_s": call.duration_s if call.duration_s is not None else event.duration_s,
        "answered_by": call.answered_by or event.answered_by,
        "attempt": call.attempt,
    }


class StatusCallbacks:
    """Applies status callbacks to the call records and publishes CallCompleted."""

    def __init__(
        self,
        *,
        records: CallRecords,
        agents: AgentDirectory,
        events: CallEvents,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._records = records
        self._agents = agents
        self._events = events
        self._clock = clock

    def received(self, callback: StatusCallback) -> StatusOutcome:
        """Apply one callback. Raises PublishFailed when CallCompleted could not be published (redeliver)."""
        event = status_event(callback, self._clock())
        outcome = self._apply(callback, event)
        logger.info(
            "Status callback",
            extra={"status": event.status.value, "sequence_number": event.sequence_number, "outcome": outcome.value},
        )
        if event.status.is_final and outcome in {StatusOutcome.APPLIED, StatusOutcome.REPLAY, StatusOutcome.CONFLICT}:
            self._complete(callback.call_sid, event)
        return outcome

    def _apply(self, callback: StatusCallback, event: StatusEvent) -> StatusOutcome:
        sid = callback.call_sid
        try:
            return StatusOutcome.APPLIED if self._records.apply_status(sid, event) else StatusOutcome.REPLAY
        except ConflictingRecord:
            return self._conflict()
        except CallNotFound:
            pass
        call = self._call_from(callback, event)
        if call is None:
            self._records.record_status_event(sid, event)
            if callback.direction == "outbound-api" and not event.status.is_final:
                return StatusOutcome.STORED_BEFORE_CALL
            metrics.add_metric(name="UnrecordedCall", unit=MetricUnit.Count, value=1)
            logger.error("Status callback for an unrecorded call whose agent cannot be told; event stored alone")
            return StatusOutcome.NO_AGENT
        try:
            if self._records.ensure_call(call):
                logger.warning("Recorded a call from its status callback", extra={"agent_id": call.agent_id})
            return StatusOutcome.APPLIED if self._records.apply_status(sid, event) else StatusOutcome.REPLAY
        except ConflictingRecord:
            return self._conflict()

    def _call_from(self, callback: StatusCallback, event: StatusEvent) -> Call | None:
        """A minimal record of the call from the callback, when that is safe and an agent can be told."""
        if callback.direction == "inbound":
            direction = CallDirection.INBOUND
            agent = self._agents.answering(callback.to_number or "")
        elif callback.direction == "outbound-api" and event.status.is_final:
            direction = CallDirection.OUTBOUND
            agent = self._outbound_agent(callback.from_number or "")
        else:
            # outbound-api before the final status waits for the dialer; outbound-dial legs are children
            # of a call recorded under its own CallSid; other directions are not Switchboard's.
            return None
        if agent is None or callback.from_number is None or callback.to_number is None:
            return None
        try:
            return Call(
                call_sid=callback.call_sid,
                direction=direction,
                from_number=callback.from_number,
                to_number=callback.to_number,
                agent_id=agent.id,
                created_at=event.at,
            )
        except ValidationError:
            return None

    def _outbound_agent(self, from_number: str) -> AgentConfig | None:
        agents = [agent for agent in self._agents if agent.outbound and agent.outbound.from_number == from_number]
        # Several agents calling from one number cannot be told apart; guessing would misfile the call.
        return agents[0] if len(agents) == 1 else None

    @staticmethod
    def _conflict() -> StatusOutcome:
        metrics.add_metric(name="ConflictingStatusCallback", unit=MetricUnit.Count, value=1)
        logger.warning("A different status event with this SequenceNumber is already recorded; keeping it")
        return StatusOutcome.CONFLICT

    def _complete(self, call_sid: str, event: StatusEvent) -> None:
        call = self._records.get_call(call_sid)
        if call is None:
            return
        completed = CallEvent(
            type=CallEventType.CALL_COMPLETED,
            call_sid=call_sid,
            agent_id=call.agent_id,
            facts=completed_facts(call, event),
        )
        if publish_once(self._records, self._events, completed):
            metrics.add_metric(name="CallCompleted", unit=MetricUnit.Count, value=1)
