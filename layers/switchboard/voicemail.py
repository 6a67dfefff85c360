"""What an outbound call does when answering machine detection says a machine answered (POST /twilio/amd).

Twilio's async AMD (MachineDetection=DetectMessageEnd) reports once the machine's greeting has ended
(`machine_end_beep`, `machine_end_silence`, `machine_end_other`). Then the agent's voicemail action runs
through Twilio's REST API on the live call: `leave_message` replaces the call's TwiML with the message
and a hang-up (which ends the media stream), `hang_up` completes the call. Other results (human, unknown,
fax) change nothing: the agent is already talking.

The conversation is marked ended ("voicemail") before the REST call, so a stream that ends meanwhile is
hung up rather than resumed, and so that a repeated callback does not leave the message twice. Twilio
does not retry this callback: a REST failure is logged, counted and written to the record
(`voicemail_outcome`) rather than answered with an error.
"""

from enum import StrEnum

from aws_lambda_powertools.metrics import MetricUnit
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from switchboard.agent import AgentConfig, AgentDirectory, Voicemail
from switchboard.call import CallDirection
from switchboard.observability import logger, metrics
from switchboard.records import CallRecords
from switchboard.twilio_forms import MachineDetection
from switchboard.twiml import say_and_hang_up

VOICEMAIL_REASON = "voicemail"


class VoicemailOutcome(StrEnum):
    LEFT_MESSAGE = "left_message"
    HUNG_UP = "hung_up"
    FAILED = "failed"


class MachineAnswers:
    """Acts on answering machine detection results for outbound calls."""

    def __init__(self, *, records: CallRecords, agents: AgentDirectory, twilio: Client) -> None:
        self._records = records
        self._agents = agents
        self._twilio = twilio

    def detected(self, detection: MachineDetection) -> VoicemailOutcome | None:
        """Record who answered and, when a machine's greeting ended, run the voicemail action.

        The outcome of the action, or None when there was nothing to do.
        """
        sid = detection.call_sid
        call = self._records.get_call(sid)
        if call is None:
            logger.warning(
                "Machine detection result for a call with no record", extra={"answered_by": detection.answered_by}
            )
            return None
        self._records.record_answered_by(sid, detection.answered_by)
        logger.info("Machine detection result", extra={"answered_by": detection.answered_by})
        if not detection.machine_message_ended or call.direction is not CallDirection.OUTBOUND:
            return None
        if call.status.is_final or detection.final_status:
            logger.info("A machine answered a call that is already over")
            return None
        if not self._records.end_conversation(sid, VOICEMAIL_REASON):
            logger.info("Conversation already ended; no voicemail action", extra={"reason": call.conversation_ended})
            return None
        agent = self._agents.get(call.agent_id)
        voicemail = agent.outbound.voicemail if agent is not None and agent.outbound is not None else Voicemail()
        outcome, detail = self._act(sid, voicemail, agent)
        # What happened goes on the record even when the action failed: Twilio will not ask again.
        self._records.record_voicemail_outcome(sid, outcome.value if detail is None else f"{outcome.value}: {detail}")
        return outcome

    def _act(self, sid: str, voicemail: Voicemail, agent: AgentConfig | None) -> tuple[VoicemailOutcome, str | None]:
        try:
            if voicemail.action == "leave_message" and voicemail.message:
                voice = agent.voice if agent is not None else None
                language = agent.language if agent is not None else None
                self._twilio.calls(sid).update(twiml=say_and_hang_up(voicemail.message, voice, language))
                outcome = VoicemailOutcome.LEFT_MESSAGE
            else:
                self._twilio.calls(sid).update(status="completed")
                outcome = VoicemailOutcome.HUNG_UP
        except TwilioRestException as exc:
            return self._failed(f"Twilio answered {exc.status} (error {exc.code}): {exc.msg}")
        except (TwilioException, OSError) as exc:
            # OSError covers the HTTP layer: requests' connection errors and timeouts derive from it.
            return self._failed(f"Twilio unreachable ({type(exc).__name__})")
        metrics.add_metric(name="VoicemailAction", unit=MetricUnit.Count, value=1)
        logger.info("Voicemail action done", extra={"outcome": outcome.value})
        return outcome, None

    @staticmethod
    def _failed(detail: str) -> tuple[VoicemailOutcome, str]:
        metrics.add_metric(name="VoicemailActionFailed", unit=MetricUnit.Count, value=1)
        logger.error("Voicemail action failed", extra={"detail": detail})
        return VoicemailOutcome.FAILED, detail
