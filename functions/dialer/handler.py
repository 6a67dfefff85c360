"""The outbound dialer: POST /calls, POST /schedules, GET /calls/{sid}; scheduled dials; retries.

One function, three kinds of event, told apart by their shape:

- an API Gateway proxy event (IAM-authorized: API Gateway checks SigV4, and we refuse any event without
  the caller's identity as well) → the routes below;
- an EventBridge event `CallCompleted` from `switchboard` → a retry of an unanswered outbound call;
- anything else is a payload EventBridge Scheduler delivers: a DialRequest object, or a list of them.

The logic lives in switchboard.dialing (dial intent, pacing, Twilio, retries), switchboard.outbound
(policies) and switchboard.schedules; this module translates events and HTTP.
"""

import functools
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any

import boto3
from aws_lambda_powertools import Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, TypeAdapter
from twilio.rest import Client

from switchboard.agent import AgentDirectory
from switchboard.dial import DialRequest, DialStatus, ScheduledDial
from switchboard.dialing import (
    CallCompleted,
    Dialer,
    DialIdConflict,
    DialIntents,
    DialRateLimited,
    DialResult,
    Pacer,
    RetryDecision,
    ScheduleRefused,
)
from switchboard.events import SOURCE, CallEventType
from switchboard.observability import logger, metrics
from switchboard.outbound import DialRefused, DoNotCallList, RefusalReason
from switchboard.records import CallRecords, CallTimeline
from switchboard.schedules import DialSchedules, ScheduleCreated, ScheduleExists, ScheduleRequest, ScheduleTooLarge
from switchboard.settings import DialerSettings, load_settings
from switchboard.twilio_rest import client_for, load_twilio_credentials

app = APIGatewayRestResolver(enable_validation=True)
tracer = Tracer()

# Where each policy refusal lands: the request is wrong (422), the policy forbids it (403), or the
# moment is wrong and next_allowed_at says when it would do (409).
REFUSAL_STATUS: dict[RefusalReason, HTTPStatus] = {
    RefusalReason.UNKNOWN_AGENT: HTTPStatus.NOT_FOUND,
    RefusalReason.NOT_AN_OUTBOUND_AGENT: HTTPStatus.UNPROCESSABLE_ENTITY,
    RefusalReason.INVALID_NUMBER: HTTPStatus.UNPROCESSABLE_ENTITY,
    RefusalReason.UNKNOWN_TIME_ZONE: HTTPStatus.UNPROCESSABLE_ENTITY,
    RefusalReason.COUNTRY_NOT_ALLOWED: HTTPStatus.FORBIDDEN,
    RefusalReason.PREMIUM_RATE_NUMBER: HTTPStatus.FORBIDDEN,
    RefusalReason.DO_NOT_CALL: HTTPStatus.FORBIDDEN,
    RefusalReason.OUTSIDE_CALLING_HOURS: HTTPStatus.CONFLICT,
}


class DialAccepted(BaseModel):
    """A dial Twilio accepted (or, for a repeated dial_id, the state it is in)."""

    model_config = ConfigDict(frozen=True)

    dial_id: str
    status: DialStatus
    call_sid: str | None = None
    agent_id: str
    attempt: int
    replayed: bool = False


class RefusedNumber(BaseModel):
    index: int
    reason: RefusalReason
    message: str


class ErrorBody(BaseModel):
    """Every refusal and failure: `error` is the machine-readable reason, `message` says it to a person."""

    model_config = ConfigDict(frozen=True)

    error: str
    message: str
    dial_id: str | None = None
    next_allowed_at: datetime | None = None
    twilio_code: int | None = None
    refused: list[RefusedNumber] | None = None


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, body: ErrorBody, headers: dict[str, str] | None = None) -> None:
        super().__init__(body.message)
        self.status = status
        self.body = body
        self.headers = headers


@dataclass(frozen=True)
class Dependencies:
    """Built once per cold start; Twilio credentials are re-read per dial through Powertools Parameters' cache."""

    settings: DialerSettings
    records: CallRecords
    dialer: Dialer


@functools.cache
def dependencies() -> Dependencies:
    settings = load_settings(DialerSettings)
    dynamodb = boto3.client("dynamodb", region_name=settings.aws_region)
    api_base_url = str(settings.twilio_api_base_url) if settings.twilio_api_base_url is not None else None

    def twilio() -> Client:
        return client_for(load_twilio_credentials(settings.twilio_secret_arn), api_base_url)

    # Read the secret now, so a missing or malformed one fails the cold start rather than the first dial.
    twilio()
    records = CallRecords(settings.calls_table, dynamodb)
    dialer = Dialer(
        agents=AgentDirectory.load(settings.agents_dir),
        intents=DialIntents(settings.calls_table, dynamodb),
        pacer=Pacer(settings.calls_table, dynamodb, max_wait_s=settings.dial_pacing_max_wait_s),
        records=records,
        twilio=twilio,
        schedules=DialSchedules(
            group=settings.schedule_group,
            target_arn=settings.dialer_function_arn,
            role_arn=settings.scheduler_role_arn,
            dead_letter_arn=settings.schedule_dead_letter_arn,
            client=boto3.client("scheduler", region_name=settings.aws_region),
        ),
        public_api_url=str(settings.public_api_url),
        do_not_call=DoNotCallList(settings.do_not_call_table, dynamodb) if settings.do_not_call_table else None,
    )
    return Dependencies(settings=settings, records=records, dialer=dialer)


# -- HTTP ------------------------------------------------------------------------------------------------


def _error_response(description: str) -> OpenAPIResponse:
    return {"description": description, "content": {content_types.APPLICATION_JSON: {"model": ErrorBody}}}


_IAM_RESPONSE: dict[int, OpenAPIResponse] = {403: _error_response("No IAM caller identity on the request")}

_DIAL_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {
        "description": "A repeated dial_id: the dial it names, already placed",
        "content": {content_types.APPLICATION_JSON: {"model": DialAccepted}},
    },
    201: {
        "description": "Twilio accepted the call",
        "content": {content_types.APPLICATION_JSON: {"model": DialAccepted}},
    },
    403: _error_response("country_not_allowed, premium_rate_number, do_not_call; or no IAM caller identity"),
    404: _error_response("unknown_agent"),
    409: _error_response("outside_calling_hours (with next_allowed_at), dial_in_progress, dial_id_conflict"),
    422: _error_response("invalid_number, unknown_time_zone, not_an_outbound_agent, or a malformed body"),
    502: _error_response("twilio_error (with twilio_code) or twilio_unreachable: the dial intent is marked failed"),
    503: _error_response(
        "rate_limited: no free second to dial from this number; repeat (same dial_id) after Retry-After"
    ),
}

_SCHEDULE_RESPONSES: dict[int, OpenAPIResponse] = {
    201: {"description": "Schedule created", "content": {content_types.APPLICATION_JSON: {"model": ScheduleCreated}}},
    403: _IAM_RESPONSE[403],
    404: _error_response("unknown_agent"),
    409: _error_response("schedule_exists: the name is taken in the group"),
    422: _error_response(
        "numbers_refused (each with its reason), schedule_too_large, not_an_outbound_agent, or a malformed body"
    ),
}


def _api_error(exc: ApiError) -> Response[str]:
    return Response(
        status_code=exc.status,
        content_type=content_types.APPLICATION_JSON,
        body=exc.body.model_dump_json(exclude_none=True),
        headers=exc.headers,
    )


# Registered without decorator syntax: Powertools' decorator is untyped, and would untype the function.
app.exception_handler(ApiError)(_api_error)


def _refusal(reason: RefusalReason, message: str, **extra: Any) -> ApiError:
    return ApiError(REFUSAL_STATUS[reason], ErrorBody(error=reason.value, message=message, **extra))


def _refusal_status(reason: str | None) -> HTTPStatus:
    try:
        return REFUSAL_STATUS[RefusalReason(reason or "")]
    except ValueError:
        # A reason this version does not know (written by a newer one): still a policy's no.
        return HTTPStatus.FORBIDDEN


_OUTCOME_METRICS = {
    DialStatus.DIALED: "DialPlaced",
    DialStatus.REFUSED: "DialRefused",
    DialStatus.FAILED: "DialFailed",
    DialStatus.DEFERRED: "DialDeferred",
}


def _dial_answer(result: DialResult) -> Response[DialAccepted]:
    intent = result.intent
    # Counted once per dial: a repeated dial_id reports the outcome again without counting it again.
    metric = None if result.replayed else _OUTCOME_METRICS.get(intent.status)
    if metric is not None:
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    if intent.status is DialStatus.REFUSED:
        body = ErrorBody(
            error=intent.reason or "refused",
            message=intent.message or "A policy refused the dial.",
            dial_id=intent.dial_id,
            next_allowed_at=intent.next_allowed_at,
        )
        raise ApiError(_refusal_status(intent.reason), body)
    if intent.status is DialStatus.FAILED:
        body = ErrorBody(
            error=intent.reason or "failed",
            message=intent.message or "The dial failed.",
            dial_id=intent.dial_id,
            twilio_code=intent.twilio_code,
        )
        raise ApiError(HTTPStatus.BAD_GATEWAY, body)
    if not intent.status.is_settled:
        raise ApiError(
            HTTPStatus.CONFLICT,
            ErrorBody(
                error="dial_in_progress",
                message="This dial_id is being dialed by another request; repeat it shortly for the outcome.",
                dial_id=intent.dial_id,
            ),
        )
    status = {DialStatus.DIALED: HTTPStatus.CREATED, DialStatus.DEFERRED: HTTPStatus.ACCEPTED}[intent.status]
    if result.replayed and intent.status is DialStatus.DIALED:
        status = HTTPStatus.OK
    accepted = DialAccepted(
        dial_id=intent.dial_id,
        status=intent.status,
        call_sid=intent.call_sid,
        agent_id=intent.agent_id,
        attempt=intent.attempt,
        replayed=result.replayed,
    )
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=accepted)


@app.post(
    "/calls",
    summary="Call a number now",
    description=(
        "Dials `to` with the agent's outbound number, after the agent's policies: a valid number of an allowed "
        "country, not premium-rate, not on the do-not-call list, inside calling hours in the callee's local "
        "time (every zone of the number). At most one call per second per from-number: a dial waits for its "
        "second, up to a bound. A dial intent is recorded before anything else and carries the outcome; "
        "a repeated `dial_id` returns it instead of dialing again."
    ),
    tags=["Outbound calls"],
    responses=_DIAL_RESPONSES,
)
def start_call(request: DialRequest) -> Response[DialAccepted]:
    try:
        result = dependencies().dialer.dial(request)
    except DialIdConflict as exc:
        raise ApiError(
            HTTPStatus.CONFLICT,
            ErrorBody(error="dial_id_conflict", message=str(exc) + ": choose a new dial_id", dial_id=exc.dial_id),
        ) from exc
    except DialRateLimited as busy:
        metrics.add_metric(name="DialRateLimited", unit=MetricUnit.Count, value=1)
        raise ApiError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            ErrorBody(error="rate_limited", message=busy.message, dial_id=busy.dial_id),
            headers={"Retry-After": "1"},
        ) from busy
    return _dial_answer(result)


@app.post(
    "/schedules",
    summary="Dial numbers later, once or on a recurring schedule",
    description=(
        "Creates an EventBridge Scheduler schedule whose target is this function: `at` (one time, deleted "
        "after it ran) or `cron` (a recurring campaign, at most a few firings a day), read in `timezone`. "
        "Numbers, countries and the do-not-call list are checked now; the do-not-call list and calling "
        "hours again at each dial. A dial that comes due outside calling hours is deferred to the next "
        "allowed moment (a new one-time schedule), not dropped."
    ),
    tags=["Schedules"],
    responses=_SCHEDULE_RESPONSES,
)
def create_schedule(request: ScheduleRequest) -> Response[ScheduleCreated]:
    try:
        created = dependencies().dialer.schedule(request)
    except DialRefused as refusal:
        raise _refusal(refusal.reason, refusal.message) from refusal
    except ScheduleRefused as refused:
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            ErrorBody(
                error="numbers_refused",
                message=f"{len(refused.refusals)} number(s) cannot be dialed by this agent; nothing was scheduled.",
                refused=[RefusedNumber(index=r.index, reason=r.reason, message=r.message) for r in refused.refusals],
            ),
        ) from refused
    except ScheduleExists as exists:
        raise ApiError(
            HTTPStatus.CONFLICT,
            ErrorBody(error="schedule_exists", message=f"A schedule named {exists.name} already exists."),
        ) from exists
    except ScheduleTooLarge as too_large:
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY, ErrorBody(error="schedule_too_large", message=str(too_large))
        ) from too_large
    metrics.add_metric(name="ScheduleCreated", unit=MetricUnit.Count, value=1)
    return Response(status_code=HTTPStatus.CREATED, content_type=content_types.APPLICATION_JSON, body=created)


@app.get(
    "/calls/<sid>",
    summary="A call and its timeline",
    description="The call record with its status history, turns and tool invocations, each in order.",
    tags=["Calls"],
    responses={403: _IAM_RESPONSE[403], 404: _error_response("call_not_found")},
)
def get_call(sid: Annotated[str, Path(pattern=r"^CA[0-9a-f]{32}$", description="The CallSid")]) -> CallTimeline:
    timeline = dependencies().records.timeline(sid)
    if timeline is None:
        raise ApiError(HTTPStatus.NOT_FOUND, ErrorBody(error="call_not_found", message=f"No call {sid} is recorded."))
    return timeline


# -- the other events ------------------------------------------------------------------------------------

_SCHEDULED_PAYLOAD: TypeAdapter[ScheduledDial | list[ScheduledDial]] = TypeAdapter(ScheduledDial | list[ScheduledDial])


def _is_api_request(event: Any) -> bool:
    return isinstance(event, dict) and "httpMethod" in event and "requestContext" in event


def _is_call_completed(event: Any) -> bool:
    return (
        isinstance(event, dict)
        and event.get("source") == SOURCE
        and event.get("detail-type") == CallEventType.CALL_COMPLETED.value
        and isinstance(event.get("detail"), dict)
    )


def _iam_caller(event: dict[str, Any]) -> bool:
    identity = (event.get("requestContext") or {}).get("identity") or {}
    return bool(identity.get("userArn")) and bool(identity.get("caller"))


def _forbidden() -> dict[str, Any]:
    """Answered before routing, so no route, body validation or dependency runs for an unidentified caller."""
    metrics.add_metric(name="UnsignedDialerRequest", unit=MetricUnit.Count, value=1)
    logger.warning("Request without an IAM caller identity refused")
    body = ErrorBody(error="forbidden", message="This API requires IAM (SigV4) authorization.")
    return {
        "statusCode": HTTPStatus.FORBIDDEN.value,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "multiValueHeaders": {},
        "body": body.model_dump_json(exclude_none=True),
        "isBase64Encoded": False,
    }


def _retry(detail: dict[str, Any]) -> dict[str, Any]:
    completed = CallCompleted.model_validate(detail)
    outcome = dependencies().dialer.retry(completed)
    if outcome.decision is RetryDecision.SCHEDULED:
        metrics.add_metric(name="RetryScheduled", unit=MetricUnit.Count, value=1)
    return {
        "decision": outcome.decision.value,
        "schedule_name": outcome.schedule_name,
        "at": outcome.at.isoformat() if outcome.at is not None else None,
    }


def _dial_scheduled(event: Any) -> dict[str, Any]:
    payload = _SCHEDULED_PAYLOAD.validate_python(event)
    dials = payload if isinstance(payload, list) else [payload]
    dialer = dependencies().dialer
    outcomes: list[dict[str, Any]] = []
    # One after another: each waits for its pacing second, and a failure raised here leaves the rest to
    # Lambda's retry of the whole payload, in which the dials already settled are replays.
    for dial in dials:
        try:
            result = dialer.dial_scheduled(dial)
        except DialIdConflict:
            logger.error(
                "Scheduled dial reuses a dial id of a different request: skipped", extra={"dial": dial.dial_id}
            )
            outcomes.append({"dial_id": dial.intent_id(), "status": "conflict"})
            continue
        intent = result.intent
        metric = None if result.replayed else _OUTCOME_METRICS.get(intent.status)
        if metric is not None:
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
        if intent.status is DialStatus.FAILED:
            logger.error("Scheduled dial failed", extra={"dial_id": intent.dial_id, "reason": intent.reason})
        outcomes.append(
            {
                "dial_id": intent.dial_id,
                "status": intent.status.value,
                "call_sid": intent.call_sid,
                "reason": intent.reason,
            }
        )
    return {"dials": outcomes}


@logger.inject_lambda_context(correlation_id_path="pathParameters.sid || detail.call_sid")
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    if _is_api_request(event):
        if not _iam_caller(event):
            return _forbidden()
        return app.resolve(event, context)
    if _is_call_completed(event):
        return _retry(event["detail"])
    # What is left is a Scheduler payload; one that does not validate is a bug worth a failed invocation.
    return _dial_scheduled(event)
