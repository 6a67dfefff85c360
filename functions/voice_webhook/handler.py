"""Twilio's voice webhooks: answer a call, keep its media stream connected, act on machine detection.

    POST /twilio/voice          answer: TwiML <Connect action=/twilio/stream-ended><Stream> with a call token
    POST /twilio/stream-ended   the <Connect action>: hang up a finished call, resume a dropped stream
    POST /twilio/amd            async answering machine detection of outbound calls: the voicemail action

Every request must carry Twilio's signature over the configured public URL (switchboard.twilio_webhook).
The logic lives in switchboard.answering and switchboard.voicemail; this module translates HTTP.
"""

import functools
from dataclasses import dataclass
from typing import Annotated, Any

import boto3
from aws_lambda_powertools import Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.typing import LambdaContext
from twilio.rest import Client

from switchboard.agent import AgentDirectory
from switchboard.answering import CallAnswering, StreamEndpoints
from switchboard.call import AgentId
from switchboard.events import CallEvents
from switchboard.observability import call_context, logger, metrics
from switchboard.records import CallRecords
from switchboard.settings import VoiceWebhookSettings, load_settings
from switchboard.stream_token import StreamTokenSigner
from switchboard.twilio_forms import MachineDetection, StreamEndedRequest, VoiceRequest
from switchboard.twilio_rest import SECRET_MAX_AGE_S, client_for, load_twilio_credentials
from switchboard.twilio_signature import TwilioSignature
from switchboard.twilio_webhook import FORBIDDEN_BODY, TwilioWebhookGuard
from switchboard.voicemail import MachineAnswers

FORM = "application/x-www-form-urlencoded"
STREAM_ENDED_PATH = "/twilio/stream-ended"
TAGS = ["Twilio webhooks"]

app = APIGatewayRestResolver(enable_validation=True)
tracer = Tracer()


@dataclass(frozen=True)
class Dependencies:
    """Built once per cold start. Secrets are read per request through Powertools Parameters' cache
    (SECRET_MAX_AGE_S), so a rotated auth token or stream key is picked up by warm containers too."""

    settings: VoiceWebhookSettings
    records: CallRecords
    agents: AgentDirectory
    events: CallEvents | None

    def signature(self) -> TwilioSignature:
        credentials = load_twilio_credentials(self.settings.twilio_secret_arn)
        return TwilioSignature(
            credentials.auth_token.get_secret_value(),
            public_api_url=str(self.settings.public_api_url),
            public_stream_url=str(self.settings.public_stream_url),
        )

    def twilio(self) -> Client:
        base_url = str(self.settings.twilio_api_base_url) if self.settings.twilio_api_base_url else None
        return client_for(load_twilio_credentials(self.settings.twilio_secret_arn), base_url)

    def stream_tokens(self) -> StreamTokenSigner:
        secret: object = parameters.get_secret(self.settings.stream_token_secret_arn, max_age=SECRET_MAX_AGE_S)
        if not isinstance(secret, str):
            raise TypeError("the stream token secret must be a plain SecretString")
        # Its UTF-8 bytes are the HMAC key, as the streaming service reads it.
        return StreamTokenSigner(secret.encode("utf-8"))

    def answering(self) -> CallAnswering:
        signature = self.signature()
        return CallAnswering(
            records=self.records,
            agents=self.agents,
            events=self.events,
            tokens=self.stream_tokens(),
            endpoints=StreamEndpoints(
                stream_url=signature.stream_url, stream_ended_url=signature.url_for(STREAM_ENDED_PATH)
            ),
            max_stream_resumes=self.settings.max_stream_resumes,
        )

    def machine_answers(self) -> MachineAnswers:
        return MachineAnswers(records=self.records, agents=self.agents, twilio=self.twilio())


@functools.cache
def dependencies() -> Dependencies:
    settings = load_settings(VoiceWebhookSettings)
    events = None
    if settings.event_bus_name is not None:
        events = CallEvents(settings.event_bus_name, boto3.client("events", region_name=settings.aws_region))
    return Dependencies(
        settings=settings,
        records=CallRecords(settings.calls_table, boto3.client("dynamodb", region_name=settings.aws_region)),
        agents=AgentDirectory.load(settings.agents_dir),
        events=events,
    )


TwilioWebhookGuard(lambda: dependencies().signature()).install(app)

_FORBIDDEN: OpenAPIResponse = {
    "description": "Not signed by Twilio over this URL",
    "content": {content_types.TEXT_PLAIN: {"schema": {"type": "string", "example": FORBIDDEN_BODY}}},
}
_TWIML: dict[int, OpenAPIResponse] = {
    200: {"description": "TwiML for the call", "content": {"text/xml": {"schema": {"type": "string"}}}},
    403: _FORBIDDEN,
}
_EMPTY: dict[int, OpenAPIResponse] = {200: {"description": "Received; Twilio ignores the body"}, 403: _FORBIDDEN}


def twiml(document: str) -> Response[str]:
    return Response(status_code=200, content_type="text/xml", body=document)


@app.post(
    "/twilio/voice",
    summary="Answer a call",
    description=(
        "Twilio's voice URL. Inbound: the agent answering the called number takes the call. Outbound: the "
        "callee answered; the agent is the call record's (or `agent_id` when the dialer has not recorded it "
        "yet). Records the call, publishes CallStarted once, and connects the call to the media stream with a "
        "per-call token. A number no agent answers gets a short message and a hang-up."
    ),
    tags=TAGS,
    responses=_TWIML,
)
def voice(
    form: Annotated[VoiceRequest, Body(media_type=FORM)],
    agent_id: Annotated[AgentId | None, Query(description="Outbound calls: the agent the dialer called for.")] = None,
) -> Response[str]:
    with call_context(form.call_sid):
        return twiml(dependencies().answering().answer(form, agent_id))


@app.post(
    STREAM_ENDED_PATH,
    summary="The media stream ended",
    description=(
        "The <Connect action>. Hangs up when the call is over (the conversation ended or Twilio reports a final "
        "status); otherwise the stream dropped and a new <Connect><Stream> resumes the conversation, up to "
        "MAX_STREAM_RESUMES times, after which the caller hears an apology and the call ends."
    ),
    tags=TAGS,
    responses=_TWIML,
)
def stream_ended(form: Annotated[StreamEndedRequest, Body(media_type=FORM)]) -> Response[str]:
    with call_context(form.call_sid):
        return twiml(dependencies().answering().stream_ended(form))


@app.post(
    "/twilio/amd",
    summary="Answering machine detection result",
    description=(
        "Async AMD of outbound calls. When a machine's greeting ended (machine_end_beep, machine_end_silence, "
        "machine_end_other) the agent's voicemail action runs through Twilio's REST API: leave the message, or "
        "hang up. Other results only record who answered. A Twilio failure is logged, counted and recorded on the "
        "call (`voicemail_outcome`); the answer is 200 either way since Twilio does not retry this callback."
    ),
    tags=TAGS,
    responses=_EMPTY,
)
def machine_detection(form: Annotated[MachineDetection, Body(media_type=FORM)]) -> Response[str]:
    with call_context(form.call_sid):
        dependencies().machine_answers().detected(form)
    return Response(status_code=200, content_type=content_types.TEXT_PLAIN, body="")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
