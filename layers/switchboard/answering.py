"""Answering a call (POST /twilio/voice) and keeping its media stream connected (POST /twilio/stream-ended).

Answering picks the agent, makes sure the call is recorded, publishes CallStarted once and connects the
call to the media stream with a per-call token. The streaming service reads everything else (who is
calling, the facts of an outbound call) from the call record, so the TwiML carries no phone number.

`<Stream>` parameters (the `start` message's customParameters):
    token      a stream token for this CallSid (switchboard.stream_token), fresh on every connect
    agent_id   the agent that handles the call
    direction  "inbound" or "outbound"
    resume     "0" on answer; the count of streams resumed so far when a dropped stream reconnects

When the stream ends Twilio requests the <Connect action>, /twilio/stream-ended: a call that is over is
hung up, a stream that dropped while the call is live is connected again (the engine restores the
conversation from Redis), up to `max_stream_resumes` times.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from switchboard.agent import AgentConfig, AgentDirectory
from switchboard.call import Call, CallDirection, CallStatus
from switchboard.events import CallEvent, CallEvents, CallEventType
from switchboard.observability import logger, metrics
from switchboard.publication import PublishFailed, publish_once
from switchboard.records import CallNotFound, CallRecords, ConflictingRecord
from switchboard.stream_token import StreamTokenSigner
from switchboard.twilio_forms import StreamEndedRequest, VoiceRequest, call_direction
from switchboard.twiml import connect_stream, hang_up, say_and_hang_up

STREAM_LOST_REASON = "stream_lost"

# Said in Twilio's default voice: with no agent there is no voice of ours to use.
NOT_IN_SERVICE = "Sorry, this number cannot take your call right now. Goodbye."
STREAM_LOST_APOLOGY = "I'm sorry, we are having technical difficulties and have to end this call. Goodbye."


@dataclass(frozen=True)
class StreamEndpoints:
    """Where Twilio connects the media stream, and where it reports that the stream ended."""

    stream_url: str
    stream_ended_url: str


class CallAnswering:
    """The voice webhook's decisions; one per request (the token signer follows the secret's rotation)."""

    def __init__(
        self,
        *,
        records: CallRecords,
        agents: AgentDirectory,
        events: CallEvents | None,
        tokens: StreamTokenSigner,
        endpoints: StreamEndpoints,
        max_stream_resumes: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._records = records
        self._agents = agents
        self._events = events
        self._tokens = tokens
        self._endpoints = endpoints
        self._max_stream_resumes = max_stream_resumes
        self._clock = clock

    # -- POST /twilio/voice ----------------------------------------------------------------------------

    def answer(self, request: VoiceRequest, agent_id: str | None) -> str:
        """The TwiML that answers the call: connect it to its agent, or a polite refusal."""
        direction = call_direction(request.direction)
        if direction is None:
            return self._refuse("unsupported call direction", direction=request.direction)
        if direction is CallDirection.INBOUND:
            call = self._inbound_call(request)
        else:
            call = self._outbound_call(request, agent_id)
        if call is None:
            return NOT_IN_SERVICE_TWIML
        agent = self._agents.get(call.agent_id)
        if agent is None:
            return self._refuse("the call's agent is not deployed", agent_id=call.agent_id)
        if call.conversation_ended is not None or request.final_status:
            logger.info("Voice webhook for a call that is already over", extra={"reason": call.conversation_ended})
            return hang_up()
        self._publish_started(call)
        metrics.add_metric(name="CallAnswered", unit=MetricUnit.Count, value=1)
        logger.info(
            "Answering call", extra={"agent_id": agent.id, "direction": call.direction.value, "attempt": call.attempt}
        )
        return self._connect(call, agent, resumes=0)

    def _inbound_call(self, request: VoiceRequest) -> Call | None:
        agent = self._agents.answering(request.to_number)
        if agent is None or CallDirection.INBOUND not in agent.directions:
            self._refuse("no agent answers the called number")
            return None
        return self._record(self._new_call(request, CallDirection.INBOUND, agent))

    def _outbound_call(self, request: VoiceRequest, agent_id: str | None) -> Call | None:
        existing = self._records.get_call(request.call_sid)
        if existing is not None:
            if agent_id is not None and agent_id != existing.agent_id:
                logger.warning(
                    "The voice URL names another agent than the call record; the record wins",
                    extra={"agent_id": existing.agent_id, "url_agent_id": agent_id},
                )
            return existing
        # The dialer records the call right after Twilio accepts it; the callee answered first.
        agent = self._agents.get(agent_id) if agent_id is not None else None
        if agent is None or CallDirection.OUTBOUND not in agent.directions:
            self._refuse("outbound call without a known outbound agent", agent_id=agent_id)
            return None
        logger.info("Outbound call answered before the dialer recorded it; recording it from the webhook")
        return self._record(self._new_call(request, CallDirection.OUTBOUND, agent))

    def _new_call(self, request: VoiceRequest, direction: CallDirection, agent: AgentConfig) -> Call | None:
        status = request.call_status if request.call_status in _LIVE_STATUSES else CallStatus.QUEUED.value
        try:
            return Call(
                call_sid=request.call_sid,
                direction=direction,
                from_number=request.from_number,
                to_number=request.to_number,
                agent_id=agent.id,
                status=CallStatus(status),
                created_at=self._clock(),
            )
        except ValidationError:
            # A withheld caller (`anonymous`) or a SIP address: the record, and so the agent, needs E.164.
            self._refuse("a party of the call has no E.164 number", agent_id=agent.id)
            return None

    def _record(self, call: Call | None) -> Call | None:
        if call is None:
            return None
        try:
            if not self._records.ensure_call(call):
                # A replay of the webhook: the stored call is the truth (it may say the conversation is over).
                return self._records.get_call(call.call_sid) or call
        except ConflictingRecord:
            existing = self._records.get_call(call.call_sid)
            logger.error(
                "A different call is recorded at this CallSid; answering with the recorded one",
                extra={"agent_id": call.agent_id, "recorded_agent_id": existing.agent_id if existing else None},
            )
            return existing
        return call

    def _publish_started(self, call: Call) -> None:
        if self._events is None:
            return
        event = CallEvent(
            type=CallEventType.CALL_STARTED,
            call_sid=call.call_sid,
            agent_id=call.agent_id,
            facts={"direction": call.direction.value, "attempt": call.attempt},
        )
        try:
            publish_once(self._records, self._events, event)
        except PublishFailed:
            # Answering matters more than the event: the claim was released, a replay can still publish it.
            metrics.add_metric(name="EventPublishFailed", unit=MetricUnit.Count, value=1)
            logger.exception("CallStarted was not published; answering the call anyway")

    # -- POST /twilio/stream-ended ---------------------------------------------------------------------

    def stream_ended(self, request: StreamEndedRequest) -> str:
        """Hang up a call that is over; connect a new stream for a live one, up to the cap."""
        call = self._records.get_call(request.call_sid)
        if call is None:
            logger.warning("Stream ended for a call with no record; hanging up")
            return hang_up()
        if call.conversation_ended is not None or request.final_status or call.status.is_final:
            logger.info("Stream ended and the call is over; hanging up", extra={"reason": call.conversation_ended})
            return hang_up()
        agent = self._agents.get(call.agent_id)
        if agent is None:
            logger.error("Stream ended for a call whose agent is not deployed", extra={"agent_id": call.agent_id})
            self._records.end_conversation(call.call_sid, STREAM_LOST_REASON)
            return hang_up()
        try:
            resumes = self._records.take_stream_resume(call.call_sid, self._max_stream_resumes)
        except CallNotFound:
            return hang_up()
        if resumes is None:
            self._records.end_conversation(call.call_sid, STREAM_LOST_REASON)
            metrics.add_metric(name="StreamLost", unit=MetricUnit.Count, value=1)
            logger.error(
                "Media stream dropped too often; ending the call",
                extra={"max_stream_resumes": self._max_stream_resumes},
            )
            return say_and_hang_up(STREAM_LOST_APOLOGY, agent.voice, agent.language)
        metrics.add_metric(name="StreamResumed", unit=MetricUnit.Count, value=1)
        logger.warning("Media stream dropped during the call; connecting a new one", extra={"stream_resumes": resumes})
        return self._connect(call, agent, resumes=resumes)

    # -- shared ----------------------------------------------------------------------------------------

    def _connect(self, call: Call, agent: AgentConfig, *, resumes: int) -> str:
        return connect_stream(
            action_url=self._endpoints.stream_ended_url,
            stream_url=self._endpoints.stream_url,
            parameters={
                "token": self._tokens.issue(call.call_sid),
                "agent_id": agent.id,
                "direction": call.direction.value,
                "resume": str(resumes),
            },
        )

    @staticmethod
    def _refuse(reason: str, **details: str | None) -> str:
        metrics.add_metric(name="CallRefused", unit=MetricUnit.Count, value=1)
        logger.warning("Refusing the call", extra={"reason": reason, **details})
        return NOT_IN_SERVICE_TWIML


# Twilio requests the voice URL while the call rings (inbound) or once it is answered (outbound).
_LIVE_STATUSES = frozenset({CallStatus.RINGING.value, CallStatus.IN_PROGRESS.value})
NOT_IN_SERVICE_TWIML = say_and_hang_up(NOT_IN_SERVICE)
