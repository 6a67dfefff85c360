"""Publishing a call event once per call, whatever the webhook deliveries.

Twilio delivers webhooks at least once and sometimes concurrently; CallCompleted (and CallStarted) must
still reach the bus once. The call item carries a claim per event type (CallRecords.claim_event): the
one delivery that wins the claim publishes, then confirms it. When publishing fails the claim is
released and `PublishFailed` raised, so the caller can answer an error and a redelivery publishes.

If a holder dies between the claim and its release (a Lambda timeout), the claim blocks publishing
until it goes stale (CLAIM_STALE_AFTER), after which a redelivery takes it over. It must outlast any
holder: the webhook functions run for seconds (their timeout is well under it).

A publish whose confirmation write fails (a DynamoDB error after put_events succeeded) stays an
unconfirmed claim: redeliveries within CLAIM_STALE_AFTER publish nothing, later ones would publish again.
"""

import secrets
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from switchboard.events import CallEvent, CallEvents, EventPublishError
from switchboard.observability import logger
from switchboard.records import CallRecords

CLAIM_STALE_AFTER = timedelta(minutes=2)


class PublishFailed(RuntimeError):
    """EventBridge did not take the event; the claim is released so that a redelivery can publish."""


def publish_once(
    records: CallRecords, events: CallEvents, event: CallEvent, *, stale_after: timedelta = CLAIM_STALE_AFTER
) -> bool:
    """Publish `event` unless it was published (or is being published) for its call: True if this call did.

    CallNotFound when the call is not recorded. PublishFailed when EventBridge refused the event.
    """
    token = secrets.token_hex(16)
    if not records.claim_event(event.call_sid, event.type.value, token, datetime.now(UTC), stale_after):
        logger.info("Event already published for this call", extra={"event_type": event.type.value})
        return False
    try:
        events.emit(event)
    except (EventPublishError, ClientError, BotoCoreError) as exc:
        try:
            records.release_event(event.call_sid, event.type.value, token)
        except (ClientError, BotoCoreError):
            # The claim goes stale instead; a redelivery after CLAIM_STALE_AFTER publishes.
            logger.exception("Could not release the claim on an unpublished event")
        raise PublishFailed(f"{event.type.value} for {event.call_sid} was not published: {exc}") from exc
    records.confirm_event(event.call_sid, event.type.value, token, datetime.now(UTC))
    return True
