"""Twilio's signature on webhooks reaching a Lambda through an API Gateway REST API (proxy integration).

`TwilioWebhookGuard` is installed on a Powertools resolver whose routes are all Twilio webhooks. Every
request must carry a valid X-Twilio-Signature, checked before anything else happens:

- before the route runs (a resolver middleware), so a forged request writes nothing;
- and before a validation error is answered: Powertools validates the form before any middleware
  runs, so a forged request with a malformed form would otherwise get a 422 describing the fields it
  got wrong, and would not be counted as forged.

A refused request gets a short plain-text 403, a `ForgedWebhook` metric and a WARNING log naming the
route and the reason, never the form (it holds phone numbers).

What Twilio signed is rebuilt from the request as Lambda sees it: the configured public base URL plus
`event["path"]` (the route, without the stage), the query string from multiValueQueryStringParameters
in the order received, and the form body, base64-decoded when API Gateway encoded it.
"""

import base64
import binascii
from collections.abc import Callable, Mapping
from http import HTTPStatus
from urllib.parse import urlencode

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from switchboard.observability import logger, metrics
from switchboard.twilio_signature import InvalidSignature, TwilioSignature, form_params, signature_from_headers

FORGED_WEBHOOK_METRIC = "ForgedWebhook"
FORBIDDEN_BODY = "Forbidden: not a valid Twilio request"


class ForgedWebhook(Exception):
    """A request to a Twilio webhook that Twilio did not sign. `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def raw_query(multi_value_query: Mapping[str, list[str]] | None) -> str:
    """The query string as Twilio requested it, rebuilt from API Gateway's decoded parameters.

    A REST API event has no raw query string. Re-encoding gives back what Twilio signed for the URLs
    Switchboard hands out (`?agent_id=<id>`, ids in [a-z0-9-]); a repeated name interleaved with
    others, or an unusual encoding of the same characters, would not survive the round trip.
    """
    if not multi_value_query:
        return ""
    return urlencode([(name, value) for name, values in multi_value_query.items() for value in values])


def form_body(body: str | None, is_base64_encoded: bool) -> str:
    """The form body as text. ValueError when it is not valid base64 (if flagged so) or not UTF-8."""
    if not body:
        return ""
    try:
        raw = base64.b64decode(body, validate=True) if is_base64_encoded else body.encode("utf-8")
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeError) as exc:
        raise ValueError("body is not valid base64 or UTF-8") from exc


def verify(event: APIGatewayProxyEvent, signature: TwilioSignature) -> None:
    """Raise ForgedWebhook unless Twilio signed this very request."""
    try:
        body = form_body(event.body, bool(event.is_base64_encoded))
    except ValueError as exc:
        raise ForgedWebhook(str(exc)) from exc
    try:
        signature.validate_form(
            event.path,
            raw_query(event.multi_value_query_string_parameters),
            form_params(body),
            signature_from_headers(event.headers),
        )
    except InvalidSignature as exc:
        raise ForgedWebhook(exc.reason) from exc
    except ValueError as exc:
        # url_for refuses a path that cannot be a route below the public URL.
        raise ForgedWebhook("invalid request path") from exc


def forbidden(event: APIGatewayProxyEvent, forged: ForgedWebhook) -> Response[str]:
    """The answer to a forged request, counted and logged."""
    metrics.add_metric(name=FORGED_WEBHOOK_METRIC, unit=MetricUnit.Count, value=1)
    logger.warning(
        "Refused a request that Twilio did not sign",
        extra={"reason": forged.reason, "path": event.path, "source_ip": event.request_context.identity.source_ip},
    )
    return Response(status_code=HTTPStatus.FORBIDDEN, content_type=content_types.TEXT_PLAIN, body=FORBIDDEN_BODY)


class TwilioWebhookGuard:
    """Checks Twilio's signature on every route of one resolver, before validation errors and routes.

    `signature` gives the current validator: it is called per request so that a rotated auth token,
    read through Powertools Parameters' cache, is picked up without a cold start.
    """

    def __init__(self, signature: Callable[[], TwilioSignature]) -> None:
        self._signature = signature
        self._app: APIGatewayRestResolver | None = None

    def install(self, app: APIGatewayRestResolver) -> None:
        self._app = app
        app.use(middlewares=[self._middleware])
        app.exception_handler([RequestValidationError, RequestUnsupportedContentType])(self._invalid_request)

    def _middleware(self, app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[str]:
        try:
            verify(app.current_event, self._signature())
        except ForgedWebhook as forged:
            return forbidden(app.current_event, forged)
        return next_middleware(app)

    def _invalid_request(self, exc: RequestValidationError | RequestUnsupportedContentType) -> Response[object]:
        event = self._current_event
        try:
            verify(event, self._signature())
        except ForgedWebhook as forged:
            return forbidden(event, forged)  # type: ignore[return-value]
        # Genuine but not what the route takes: Powertools' own answer, details hidden as it hides them.
        status = (
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE
            if isinstance(exc, RequestUnsupportedContentType)
            else HTTPStatus.UNPROCESSABLE_ENTITY
        )
        logger.warning("Refused a signed Twilio request that does not fit the route", extra={"path": event.path})
        errors = [{"loc": error["loc"], "type": error["type"]} for error in exc.errors()]
        return Response(
            status_code=status,
            content_type=content_types.APPLICATION_JSON,
            body={"statusCode": status, "detail": errors},
        )

    @property
    def _current_event(self) -> APIGatewayProxyEvent:
        if self._app is None:
            raise RuntimeError("TwilioWebhookGuard is not installed")
        return self._app.current_event
