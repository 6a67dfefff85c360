"""API Gateway REST (v1 proxy) events as Lambda receives them, shaped on Powertools' own sample event
(tests/events/apiGatewayProxyEvent.json), and Twilio requests signed with twilio's RequestValidator."""

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

STAGE = "prod"
ACCOUNT_ID = "123456789012"
API_ID = "1234567890"


@dataclass(frozen=True)
class LambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name: str = "switchboard-test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:switchboard-test"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def rest_event(
    method: str,
    path: str,
    *,
    resource: str | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    iam_user_arn: str | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """A proxy event for `method path`. `iam_user_arn` fills the identity API Gateway sets under IAM auth."""
    all_headers = {
        "Host": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "TwilioProxy/1.1",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "443",
        "X-Amzn-Trace-Id": "Root=1-5e66d96f-7491f09xmpl79d18acf3d050",
        **(headers or {}),
    }
    identity: dict[str, Any] = {
        "sourceIp": "54.172.60.1",
        "userAgent": all_headers["User-Agent"],
        "accountId": None,
        "caller": None,
        "user": None,
        "userArn": None,
        "accessKey": None,
    }
    if iam_user_arn is not None:
        identity.update(
            {"accountId": ACCOUNT_ID, "caller": "AROAEXAMPLE", "user": "AROAEXAMPLE", "userArn": iam_user_arn}
        )
        identity["accessKey"] = "ASIAEXAMPLE"
    encoded_body = body
    if body is not None and base64_body:
        encoded_body = base64.b64encode(body.encode()).decode()
    return {
        "version": "1.0",
        "resource": resource or path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": API_ID,
            "extendedRequestId": "request-id",
            "httpMethod": method,
            "identity": identity,
            "path": f"/{STAGE}{path}",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "requestTime": "09/Apr/2015:12:34:56 +0000",
            "requestTimeEpoch": 1428582896000,
            "resourceId": "abcdef",
            "resourcePath": resource or path,
            "stage": STAGE,
        },
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "body": encoded_body,
        "isBase64Encoded": base64_body,
    }


def json_event(method: str, path: str, payload: Any, **kwargs: Any) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return rest_event(method, path, body=json.dumps(payload), headers=headers, **kwargs)


def twilio_form_event(
    path: str,
    params: dict[str, str] | list[tuple[str, str]],
    *,
    auth_token: str,
    public_url: str,
    query: dict[str, str] | None = None,
    signature: str | None = None,
) -> dict[str, Any]:
    """A Twilio webhook POST, signed like Twilio signs it: over `public_url` (query included) and the form.

    `signature` overrides the computed one (forged requests); pass "" for an unsigned request.
    """
    url = public_url + (("?" + urlencode(query)) if query else "")
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    if signature is None:
        signature = sign(url, pairs, auth_token)
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
    if signature:
        headers["X-Twilio-Signature"] = signature
    return rest_event("POST", path, body=urlencode(pairs), headers=headers, query=query)


class _Form(dict[str, list[str]]):
    # RequestValidator reads repeated names through getall(), as from Flask's MultiDict.
    def getall(self, name: str) -> list[str]:
        return self[name]


def sign(url: str, pairs: list[tuple[str, str]], auth_token: str) -> str:
    """X-Twilio-Signature for a form POST to `url`, computed by twilio's own RequestValidator."""
    form = _Form()
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    return str(RequestValidator(auth_token).compute_signature(url, form))


def response_json(response: dict[str, Any]) -> Any:
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)
