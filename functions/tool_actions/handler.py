"""The tool actions API: POST /tools/{name}, called by the streaming service with SigV4 (IAM auth).

API Gateway checks the signature; as a second line, any request without an IAM identity in its request
context is refused here with 403 before anything else (validation errors included). The logic lives in
switchboard.tool_actions; this module translates HTTP.
"""

import functools
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

import boto3
from aws_lambda_powertools import Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import (
    BadRequestError,
    NotFoundError,
    ServiceError,
)
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from switchboard.agent import AgentDirectory
from switchboard.booking import AppointmentBook, BookingError
from switchboard.events import CallEvents
from switchboard.observability import call_context, logger, metrics
from switchboard.records import CallNotFound, CallRecords
from switchboard.settings import ToolActionsSettings, load_settings
from switchboard.sms import TextMessages
from switchboard.tool import ToolName, ToolRequest, ToolResult
from switchboard.tool_actions import BadArguments, ToolActions, ToolCallInProgress, UnknownTool
from switchboard.transfer import CallTransfers
from switchboard.twilio_rest import client_for, load_twilio_credentials

MISSING_IDENTITY_METRIC = "UnsignedToolRequest"

app = APIGatewayRestResolver(enable_validation=True)
tracer = Tracer()


@dataclass(frozen=True)
class Dependencies:
    settings: ToolActionsSettings
    tool_actions: ToolActions


@functools.cache
def dependencies() -> Dependencies:
    settings = load_settings(ToolActionsSettings)
    dynamodb = boto3.client("dynamodb", region_name=settings.aws_region)
    credentials = load_twilio_credentials(settings.twilio_secret_arn)
    api_base = str(settings.twilio_api_base_url) if settings.twilio_api_base_url is not None else None
    twilio = client_for(credentials, api_base)
    records = CallRecords(settings.calls_table, dynamodb)
    tool_actions = ToolActions(
        records=records,
        agents=AgentDirectory.load(settings.agents_dir).get,
        appointments=AppointmentBook(settings.appointments_table, dynamodb),
        messages=TextMessages(settings.calls_table, dynamodb, twilio),
        transfers=CallTransfers(records, twilio),
        events=CallEvents(settings.event_bus_name, boto3.client("events", region_name=settings.aws_region)),
        persistence=DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=dynamodb),
        idempotency_ttl_s=settings.idempotency_ttl_s,
    )
    return Dependencies(settings=settings, tool_actions=tool_actions)


# -- IAM identity, checked before anything else ---------------------------------------------------------


def _has_iam_identity(event: APIGatewayProxyEvent) -> bool:
    identity = event.request_context.identity
    return bool(identity.user_arn) and bool(identity.caller)


def _forbidden(event: APIGatewayProxyEvent) -> Response[dict[str, Any]]:
    metrics.add_metric(name=MISSING_IDENTITY_METRIC, unit=MetricUnit.Count, value=1)
    logger.warning(
        "Refused a tool request without an IAM identity",
        extra={"path": event.path, "source_ip": event.request_context.identity.source_ip},
    )
    return Response(
        status_code=HTTPStatus.FORBIDDEN,
        content_type=content_types.APPLICATION_JSON,
        body={"statusCode": HTTPStatus.FORBIDDEN, "message": "Forbidden: the request is not IAM-signed"},
    )


def _require_iam_identity(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    if not _has_iam_identity(app.current_event):
        return _forbidden(app.current_event)
    return next_middleware(app)


app.use(middlewares=[_require_iam_identity])


def _invalid_request(exc: RequestValidationError) -> Response[dict[str, Any]]:
    # Powertools validates the body before any middleware runs: an unsigned request must still get 403.
    if not _has_iam_identity(app.current_event):
        return _forbidden(app.current_event)
    errors = [{"loc": error["loc"], "type": error["type"]} for error in exc.errors()]
    return Response(
        status_code=HTTPStatus.UNPROCESSABLE_ENTITY,
        content_type=content_types.APPLICATION_JSON,
        body={"statusCode": HTTPStatus.UNPROCESSABLE_ENTITY, "detail": errors},
    )


def _unavailable(exc: Exception) -> Response[dict[str, Any]]:
    # Nothing was done that a retry would repeat wrongly: the idempotency record of a run that raised is
    # deleted, and each action's writes are conditional.
    logger.exception("Tool request could not be served", exc_info=exc)
    metrics.add_metric(name="ToolUnavailable", unit=MetricUnit.Count, value=1)
    return Response(
        status_code=HTTPStatus.SERVICE_UNAVAILABLE,
        content_type=content_types.APPLICATION_JSON,
        body={"statusCode": HTTPStatus.SERVICE_UNAVAILABLE, "message": "The tool could not run now; try again."},
    )


# Registered by call rather than as decorators: Powertools' decorator is untyped.
app.exception_handler(RequestValidationError)(_invalid_request)
app.exception_handler([ClientError, BotoCoreError, BookingError, IdempotencyPersistenceLayerError])(_unavailable)


# -- the route ------------------------------------------------------------------------------------------


def _error(description: str) -> OpenAPIResponse:
    return {
        "description": description,
        "content": {
            content_types.APPLICATION_JSON: {
                "schema": {
                    "type": "object",
                    "properties": {"statusCode": {"type": "integer"}, "message": {"type": "string"}},
                }
            }
        },
    }


_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {
        "description": "The tool ran, or a policy refused it (outcome `refused`), or the action failed (`failed`)",
        "content": {content_types.APPLICATION_JSON: {"model": ToolResult}},
    },
    400: _error("Arguments no tool takes (not plain JSON, too large or too deeply nested)"),
    403: _error("The request carries no IAM identity"),
    404: _error("No such tool, or no record of the call"),
    409: _error("The same tool call is running now: retry shortly to get its result"),
    503: _error("A backing service failed; nothing was done that a retry would repeat"),
}


@app.post(
    "/tools/<name>",
    summary="Run a tool for a live call",
    description=(
        "Runs one of the agent's tools (book_appointment, send_sms, transfer_call, end_call) for the call named "
        "in the body. The agent and the caller's number come from the call record, never from the request; the "
        "agent's policies are applied whatever the arguments say. Idempotent: the same call, tool and arguments "
        "give one side effect and the same result. Refusals and invalid arguments are 200 with outcome `refused` "
        "and a message the agent can act on."
    ),
    tags=["Tools"],
    responses=_RESPONSES,
)
def invoke_tool(
    name: Annotated[str, Path(description="The tool", examples=[tool.value for tool in ToolName])],
    request: Annotated[ToolRequest, Body()],
) -> ToolResult:
    with call_context(request.call_sid):
        try:
            return dependencies().tool_actions.invoke(name, request, app.lambda_context)
        except UnknownTool as exc:
            raise NotFoundError(str(exc)) from exc
        except CallNotFound as exc:
            raise NotFoundError("No record of this call") from exc
        except BadArguments as exc:
            raise BadRequestError(str(exc)) from exc
        except ToolCallInProgress as exc:
            raise ServiceError(HTTPStatus.CONFLICT, str(exc)) from exc


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
