"""SignedToolActions against a real local HTTP server that checks SigV4 the way API Gateway would.

The server recomputes each request's signature with botocore from the credentials it knows and what it
received (method, URL, the signed headers, the body), and answers 403 on any mismatch, so a request
whose body was changed after signing, or one signed with a wrong secret, does not get through.
"""

import asyncio
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from fastapi import FastAPI, Request, Response

from streaming.tool_client import SignedToolActions
from switchboard.agent import AgentConfig
from switchboard.tool import ToolName, ToolOutcome, ToolResult
from tests.support.net import free_port

REGION = "eu-west-1"
ACCESS_KEY = "AKIDSWITCHBOARDTEST"
SECRET_KEY = "the-secret-key-the-api-knows"
SESSION_TOKEN = "session-token-of-the-task-role"
CALL_SID = "CA" + "3" * 32
STAGE = "/prod"

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


def signature_problem(
    method: str, url: str, headers: dict[str, str], body: bytes, known: dict[str, Credentials]
) -> str | None:
    """Why this request's SigV4 signature is not valid for any of the `known` credentials, or None."""
    match = _AUTHORIZATION.fullmatch(headers.get("authorization", ""))
    if match is None:
        return "no SigV4 authorization"
    credentials = known.get(match["key"])
    if credentials is None:
        return "unknown access key"
    if (match["service"], match["region"]) != ("execute-api", REGION):
        return "wrong credential scope"
    signed = match["signed"].split(";")
    if not {"host", "x-amz-date"} <= set(signed):
        return "host and date not signed"
    if credentials.token is not None and headers.get("x-amz-security-token") != credentials.token:
        return "session token missing"
    if credentials.token is not None and "x-amz-security-token" not in signed:
        return "session token not signed"
    stamp = headers["x-amz-date"]
    if abs(datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) - datetime.now(UTC)) > timedelta(minutes=5):
        return "stale signature"
    received = AWSRequest(method=method, url=url, data=body, headers={name: headers[name] for name in signed})
    received.context["timestamp"] = stamp
    signer = SigV4Auth(credentials, "execute-api", REGION)
    expected = signer.signature(signer.string_to_sign(received, signer.canonical_request(received)), received)
    if not hmac.compare_digest(expected, match["signature"]):
        return "signature mismatch"
    return None


@dataclass
class ToolApi:
    """The tool-actions API double: checks signatures, then plays the scripted answers in order."""

    known: dict[str, Credentials]
    answers: list[Callable[[], Any]] = field(default_factory=list)
    verdicts: list[str | None] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    # Set when the test is over: answers that hang (a timeout) give up then, so the server can stop.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post(STAGE + "/tools/{name}")
        async def tool(name: str, request: Request) -> Response:
            body = await request.body()
            problem = signature_problem(request.method, str(request.url), dict(request.headers), body, self.known)
            self.verdicts.append(problem)
            self.paths.append(request.url.path)
            if problem is not None:
                return Response(json.dumps({"message": problem}), status_code=403)
            self.bodies.append(json.loads(body))
            answer = self.answers.pop(0)()
            if asyncio.iscoroutine(answer):
                answer = await answer
            assert isinstance(answer, Response)
            return answer

        return app


def ok(result: ToolResult) -> Callable[[], Response]:
    return lambda: Response(result.model_dump_json(), media_type="application/json")


def status(code: int, body: str = "{}") -> Callable[[], Response]:
    return lambda: Response(body, status_code=code, media_type="application/json")


def hang(until: asyncio.Event) -> Callable[[], Any]:
    async def late() -> Response:
        await until.wait()
        return Response("{}")

    return late


BOOKED = ToolResult(
    tool=ToolName.BOOK_APPOINTMENT,
    outcome=ToolOutcome.SUCCEEDED,
    message="Booked for Tuesday at 10:30.",
    data={"start": "2026-11-24T10:30:00+00:00"},
    invocation_id="inv-1",
)
ARGUMENTS = {"start": "2026-11-24T10:30", "name": "Ada"}


@pytest.fixture
def task_role() -> Credentials:
    return Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)


@pytest.fixture
async def api(task_role: Credentials) -> AsyncIterator[tuple[ToolApi, str]]:
    tool_api = ToolApi(known={ACCESS_KEY: task_role})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(tool_api.app(), host="127.0.0.1", port=port, lifespan="off", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    yield tool_api, f"http://127.0.0.1:{port}{STAGE}"
    tool_api.released.set()
    server.should_exit = True
    await task


def _no_schemas(agent: AgentConfig) -> list[dict[str, Any]]:
    return []


@pytest.fixture
async def client(api: tuple[ToolApi, str], task_role: Credentials) -> AsyncIterator[SignedToolActions]:
    _, url = api
    actions = SignedToolActions(url, REGION, _no_schemas, credentials=task_role, conflict_backoff_s=0.01)
    yield actions
    await actions.aclose()


def tool_errors(capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str]]:
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    return [(d["tool"], d["kind"]) for d in documents if "ToolErrors" in d]


def assert_failed(result: ToolResult) -> None:
    assert result == ToolResult(
        tool=ToolName.BOOK_APPOINTMENT,
        outcome=ToolOutcome.FAILED,
        message="The book_appointment action is not available right now.",
    )


async def test_a_signed_request_gets_the_tool_result(
    api: tuple[ToolApi, str], client: SignedToolActions, capsys: pytest.CaptureFixture[str]
) -> None:
    tool_api, _ = api
    tool_api.answers.append(ok(BOOKED))

    result = await client.invoke(CALL_SID, "book_appointment", ARGUMENTS)

    assert result == BOOKED
    assert tool_api.verdicts == [None]
    assert tool_api.paths == [STAGE + "/tools/book_appointment"]
    assert tool_api.bodies == [{"call_sid": CALL_SID, "arguments": ARGUMENTS}]
    assert tool_errors(capsys) == []


async def test_a_duplicate_in_progress_is_retried_until_the_stored_result_comes_back(
    api: tuple[ToolApi, str], client: SignedToolActions
) -> None:
    tool_api, _ = api
    tool_api.answers.extend([status(409), status(409), ok(BOOKED)])

    result = await client.invoke(CALL_SID, "book_appointment", ARGUMENTS)

    assert result == BOOKED
    # Each attempt signed afresh, and every one of them verified.
    assert tool_api.verdicts == [None, None, None]


async def test_a_duplicate_still_in_progress_after_the_retries_fails(
    api: tuple[ToolApi, str], client: SignedToolActions, capsys: pytest.CaptureFixture[str]
) -> None:
    tool_api, _ = api
    tool_api.answers.extend([status(409)] * 5)

    assert_failed(await client.invoke(CALL_SID, "book_appointment", ARGUMENTS))
    assert len(tool_api.verdicts) == 5
    assert tool_errors(capsys) == [("book_appointment", "in_progress")]


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        pytest.param(status(500, '{"message": "Internal server error"}'), "server_error", id="500"),
        pytest.param(status(502), "server_error", id="502"),
        pytest.param(status(404, '{"message": "unknown call"}'), "client_error", id="404"),
        pytest.param(status(200, "<html>not json</html>"), "bad_response", id="invalid-json"),
        pytest.param(status(200, '{"tool": "book_appointment"}'), "bad_response", id="not-a-result"),
        pytest.param(
            ok(BOOKED.model_copy(update={"tool": ToolName.SEND_SMS})), "bad_response", id="result-for-another-tool"
        ),
    ],
)
async def test_an_unusable_answer_is_a_failed_result(
    api: tuple[ToolApi, str],
    client: SignedToolActions,
    capsys: pytest.CaptureFixture[str],
    answer: Callable[[], Response],
    kind: str,
) -> None:
    tool_api, _ = api
    tool_api.answers.append(answer)
    assert_failed(await client.invoke(CALL_SID, "book_appointment", ARGUMENTS))
    assert tool_errors(capsys) == [("book_appointment", kind)]


async def test_a_timeout_is_a_failed_result(
    api: tuple[ToolApi, str], task_role: Credentials, capsys: pytest.CaptureFixture[str]
) -> None:
    tool_api, url = api
    tool_api.answers.append(hang(tool_api.released))
    actions = SignedToolActions(url, REGION, _no_schemas, credentials=task_role, timeout_s=0.3)
    try:
        assert_failed(await actions.invoke(CALL_SID, "book_appointment", ARGUMENTS))
    finally:
        await actions.aclose()
    assert tool_errors(capsys) == [("book_appointment", "timeout")]


async def test_nothing_listening_is_a_failed_result(task_role: Credentials, capsys: pytest.CaptureFixture[str]) -> None:
    actions = SignedToolActions(f"http://127.0.0.1:{free_port()}", REGION, _no_schemas, credentials=task_role)
    try:
        assert_failed(await actions.invoke(CALL_SID, "book_appointment", ARGUMENTS))
    finally:
        await actions.aclose()
    assert tool_errors(capsys) == [("book_appointment", "transport")]


class TamperingTransport(httpx.AsyncBaseTransport):
    """Changes the body after it was signed, as a man in the middle would."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        body["arguments"]["name"] = "Mallory"
        content = json.dumps(body).encode()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
        tampered = httpx.Request(request.method, request.url, headers=headers, content=content)
        return await self._inner.handle_async_request(tampered)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_the_api_refuses_a_body_changed_after_signing(
    api: tuple[ToolApi, str], task_role: Credentials, capsys: pytest.CaptureFixture[str]
) -> None:
    tool_api, url = api
    async with httpx.AsyncClient(transport=TamperingTransport()) as http:
        actions = SignedToolActions(url, REGION, _no_schemas, credentials=task_role, http=http)
        assert_failed(await actions.invoke(CALL_SID, "book_appointment", ARGUMENTS))
    assert tool_api.verdicts == ["signature mismatch"]
    assert tool_api.bodies == []
    assert tool_errors(capsys) == [("book_appointment", "client_error")]


async def test_the_api_refuses_a_request_signed_with_a_wrong_secret(api: tuple[ToolApi, str]) -> None:
    tool_api, url = api
    wrong = Credentials(ACCESS_KEY, "not-the-secret", SESSION_TOKEN)
    actions = SignedToolActions(url, REGION, _no_schemas, credentials=wrong)
    try:
        assert_failed(await actions.invoke(CALL_SID, "book_appointment", ARGUMENTS))
    finally:
        await actions.aclose()
    assert tool_api.verdicts == ["signature mismatch"]


async def test_credentials_are_refreshed_as_botocore_does(api: tuple[ToolApi, str]) -> None:
    tool_api, url = api
    rotated = Credentials("AKIDROTATED", "rotated-secret", "rotated-token")
    tool_api.known[rotated.access_key] = rotated
    refreshes: list[str] = []

    def refresh() -> dict[str, str]:
        refreshes.append("refresh")
        return {
            "access_key": rotated.access_key,
            "secret_key": rotated.secret_key,
            "token": str(rotated.token),
            "expiry_time": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        }

    # Expiring within botocore's mandatory refresh window: the next use must refresh first.
    expiring = RefreshableCredentials.create_from_metadata(
        {
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "token": SESSION_TOKEN,
            "expiry_time": (datetime.now(UTC) + timedelta(seconds=30)).isoformat(),
        },
        refresh_using=refresh,
        method="test",
    )
    tool_api.answers.extend([ok(BOOKED), ok(BOOKED)])
    actions = SignedToolActions(url, REGION, _no_schemas, credentials=expiring)
    try:
        assert await actions.invoke(CALL_SID, "book_appointment", ARGUMENTS) == BOOKED
        assert await actions.invoke(CALL_SID, "book_appointment", ARGUMENTS) == BOOKED
    finally:
        await actions.aclose()
    assert refreshes == ["refresh"]
    assert tool_api.verdicts == [None, None]


async def test_schemas_come_from_the_given_function(task_role: Credentials) -> None:
    seen: list[str] = []

    def schemas(agent: AgentConfig) -> list[dict[str, Any]]:
        seen.append(agent.id)
        return [{"type": "function", "function": {"name": "end_call"}}]

    actions = SignedToolActions("https://tools.example.com", REGION, schemas, credentials=task_role)
    agent = AgentConfig.model_validate(
        {
            "id": "test-agent",
            "name": "Test",
            "directions": ["outbound"],
            "voice": {"id": "Joanna"},
            "greeting": "Hello.",
            "system_prompt": "Be brief.",
            "outbound": {"from_number": "+15550100100", "allowed_countries": ["US"]},
        }
    )
    try:
        assert actions.schemas(agent) == [{"type": "function", "function": {"name": "end_call"}}]
    finally:
        await actions.aclose()
    assert seen == ["test-agent"]


async def test_an_unknown_tool_name_is_a_programming_error(client: SignedToolActions) -> None:
    with pytest.raises(ValueError, match="not_a_tool"):
        await client.invoke(CALL_SID, "not_a_tool", {})
