"""Transferring a live call: only to a number on the agent's allow-list, and never to one that costs extra.

The LLM names an entry of the allow-list ("front_desk"); a number it makes up, or reads out from what the
caller said, names no entry and is refused. The entry's number is checked as well, so a mistake in an
agent file cannot send callers to a premium-rate line: the target must be in the same country (and,
where the numbering plan tells, the same region) as our own number on the call, and not a premium-rate,
shared-cost or personal number. The transfer itself replaces the call's TwiML with a <Dial>, which ends
the media stream; the conversation is then marked over so /twilio/stream-ended does not resume it.
"""

import phonenumbers
from botocore.exceptions import BotoCoreError, ClientError
from phonenumbers import PhoneNumberType
from twilio.base.exceptions import TwilioException
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from switchboard.action import ActionResult
from switchboard.agent import TransferPolicy
from switchboard.call import Call
from switchboard.observability import logger
from switchboard.records import CallRecords
from switchboard.sms import our_number, twilio_error

TRANSFERRED = "transferred"

# Numbers whose cost falls on the caller or on us beyond a normal call.
_COSTLY_TYPES = frozenset({PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST, PhoneNumberType.PERSONAL_NUMBER})


class TransferRefused(Exception):
    """A transfer the policy does not allow; the message is a sentence the agent can act on."""


def entry_name(requested: str) -> str:
    """How an allow-list name is looked up: "Front desk" and "front-desk" both name `front_desk`."""
    return "_".join(requested.strip().lower().replace("-", " ").split())


def number_problem(target: str, own: str) -> str | None:
    """Why `target` is no place to send a caller from our number `own`, or None when it is fine."""
    try:
        number = phonenumbers.parse(target)
        ours = phonenumbers.parse(own)
    except phonenumbers.NumberParseException:
        return "not a phone number"
    if not phonenumbers.is_possible_number(number):
        return "not a possible phone number"
    if number.country_code != ours.country_code:
        return "a number in another country"
    # Fictional and unassigned ranges (555-01xx) have no region; a region known on both sides must match
    # (+1 is shared by the US, Canada and the Caribbean, so the country code alone is not the country).
    region, our_region = phonenumbers.region_code_for_number(number), phonenumbers.region_code_for_number(ours)
    if region is not None and our_region is not None and region != our_region:
        return "a number in another country"
    if phonenumbers.number_type(number) in _COSTLY_TYPES:
        return "a premium-rate or shared-cost number"
    return None


def transfer_target(policy: TransferPolicy, requested: str, own: str) -> tuple[str, str]:
    """The allow-list entry the request names and its number; TransferRefused otherwise."""
    names = ", ".join(sorted(policy.allow))
    name = entry_name(requested)
    if name not in policy.allow:
        raise TransferRefused(f"I can only transfer to one of: {names}.")
    number = policy.allow[name]
    if (problem := number_problem(number, own)) is not None:
        raise TransferRefused(f"The {name} line is not available for transfers ({problem}).")
    return name, number


class CallTransfers:
    """Transfers calls with Twilio's call update API under an agent's TransferPolicy. Thread-safe."""

    def __init__(self, records: CallRecords, twilio: Client) -> None:
        self.records = records
        self.twilio = twilio

    def transfer(self, call: Call, policy: TransferPolicy, requested: str) -> ActionResult:
        if call.conversation_ended is not None or call.status.is_final:
            return ActionResult.refused("The call is already ending, so it cannot be transferred.")
        try:
            name, number = transfer_target(policy, requested, our_number(call))
        except TransferRefused as refused:
            return ActionResult.refused(str(refused))
        twiml = VoiceResponse()
        twiml.dial(number)
        try:
            self.twilio.calls(call.call_sid).update(twiml=str(twiml))
        except (TwilioException, OSError) as exc:
            # Nothing changed on the call: the conversation goes on and is not marked over.
            return ActionResult.failed("The transfer did not go through.", twilio_error(exc))
        try:
            self.records.end_conversation(call.call_sid, TRANSFERRED)
        except (ClientError, BotoCoreError):
            # The caller is already being transferred: report what happened, and leave the missing mark
            # to the logs (the <Dial> replaced the stream, so nothing will try to resume it).
            logger.exception("Transferred, but the conversation could not be marked over")
        return ActionResult.succeeded(f"The call is being transferred to {name}.", {"to": name})
