"""Twilio's call status callbacks: POST /twilio/status into the call record, CallCompleted once per call.

Every request must carry Twilio's signature over the configured public URL (switchboard.twilio_webhook).
The logic lives in switchboard.status_callbacks; this module translates HTTP.
"""

import functools
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

import boto3
from aws_lambda_powertools import Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from switchboard.agent import AgentDirectory
from switchboard.events import CallEvents
from switchboard.observability import call_context, logger, metrics
from switchboard.publication import PublishFailed
from switchboard.records import CallRecords
from switchboard.settings import StatusCallbackSettings, load_settings
from switchboard.status_callbacks import StatusCallbacks, StatusOutcome
from switchboard.twilio_forms import StatusCallback
from switchboard.twilio_rest import load_twilio_credentials
from switchboard.twilio_signature import TwilioSignature
from switchboard.twilio_webhook import FORBIDDEN_BODY, TwilioWebhookGuard

FORM = "application/x-www-form-urlencoded"

app = APIGatewayRestResolver(enable_validation=True)
tracer = Tracer()


class StatusReceived(BaseModel):
    """What became of the callback (Twilio ignores the body; it is there for people and tests)."""

    model_config = ConfigDict(frozen=True)

    outcome: StatusOutcome


@dataclass(frozen=True)
class Dependencies:
    """Built once per cold start; the auth token is read per request through Powertools Parameters' cache."""

    settings: StatusCallbackSettings
    records: CallRecords
    agents: AgentDirectory
    events: CallEvents

    def signature(self) -> TwilioSignature:
        credentials = load_twilio_credentials(self.settings.twilio_secret_arn)
        return TwilioSignature(
            credentials.auth_token.get_secret_value(), public_api_url=str(self.settings.public_api_url)
        )

    def status_callbacks(self) -> StatusCallbacks:
        return StatusCallbacks(records=self.records, agents=self.agents, events=self.events)


@functools.cache
def dependencies() -> Dependencies:
    settings = load_settings(StatusCallbackSettings)
    return Dependencies(
        settings=settings,
        records=CallRecords(settings.calls_table, boto3.client("dynamodb", region_name=settings.aws_region)),
        agents=AgentDirectory.load(settings.agents_dir),
        events=CallEvents(settings.event_bus_name, boto3.client("events", region_name=settings.aws_region)),
    )


TwilioWebhookGuard(lambda: dependencies().signature()).install(app)


def _publish_failed(exc: PublishFailed) -> Response[str]:
    # The status is recorded; only the event is missing. A 5xx lets Twilio's retry (or an operator's
    # redelivery) publish it: the claim was released.
    metrics.add_metric(name="EventPublishFailed", unit=MetricUnit.Count, value=1)
    logger.error("CallCompleted was not published", exc_info=exc)
    return Response(
        status_code=HTTPStatus.INTERNAL_SERVER_ERROR,
        content_type=content_types.TEXT_PLAIN,
        body="Status recorded, CallCompleted not published: deliver again",
    )


app.exception_handler(PublishFailed)(_publish_failed)

_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {
        "description": "Recorded (or known already); Twilio ignores the body",
        "content": {content_types.APPLICATION_JSON: {"model": StatusReceived}},
    },
    403: {
        "description": "Not signed by Twilio over this URL",
        "content": {content_types.TEXT_PLAIN: {"schema": {"type": "string", "example": FORBIDDEN_BODY}}},
    },
    500: {
        "description": "Recorded, but CallCompleted could not be published: deliver the callback again",
        "content": {content_types.TEXT_PLAIN: {"schema": {"type": "string"}}},
    },
}


@app.post(
    "/twilio/status",
    summary="Call status callback",
    description=(
        "Twilio's statusCallback for initiated, ringing, answered and completed. Recorded in the call record, "
        "ordered by SequenceNumber, so duplicates and any delivery order give the same record. The final status "
        "publishes CallCompleted on the event bus exactly once per call. A callback for a call with no record "
        "records the call from the callback when its agent can be told (see switchboard.status_callbacks)."
    ),
    tags=["Twilio webhooks"],
    responses=_RESPONSES,
)
def status(form: Annotated[StatusCallback, Body(media_type=FORM)]) -> StatusReceived:
    with call_context(form.call_sid):
        return StatusReceived(outcome=dependencies().status_callbacks().received(form))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
