"""The production ToolActions: POST /tools/{name} on the tool-actions API, signed with SigV4 as the task role.

API Gateway checks the signature (IAM authorization) and the tool Lambda every policy. Whatever happens
on the way, the engine gets a ToolResult it can tell the LLM about, never an exception:

- 200: the Lambda's ToolResult (succeeded, refused with a reason, or failed).
- 409: the same tool call is still running (a duplicate: the Lambda is idempotent per call, tool and
  arguments); retried a few times with a growing pause, after which it has usually finished and the
  stored result comes back.
- A timeout (the whole exchange, retries included, is bounded by timeout_s: a caller is waiting on the
  line), a 5xx, another 4xx, a transport error or a body that is not a ToolResult: outcome "failed",
  "The <tool> action is not available right now.", logged and counted as ToolErrors{tool, kind}.

Credentials come from botocore's provider (the ECS task role's, refreshed before they expire); a refresh
is an HTTP call, so it runs in a thread and never blocks the calls' audio on the event loop.
"""

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import boto3
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydantic import ValidationError

from streaming.counters import count
from switchboard.agent import AgentConfig
from switchboard.observability import logger
from switchboard.tool import ToolName, ToolOutcome, ToolRequest, ToolResult

SIGNING_SERVICE = "execute-api"
DEFAULT_TIMEOUT_S = 8.0
CONFLICT_RETRIES = 4
CONFLICT_BACKOFF_S = 0.25


class SignedToolActions:
    """ToolActions over the SigV4-signed tool-actions API."""

    def __init__(
        self,
        tools_api_url: str,
        region: str,
        schemas: Callable[[AgentConfig], list[dict[str, Any]]],
        credentials: Credentials | None = None,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        conflict_retries: int = CONFLICT_RETRIES,
        conflict_backoff_s: float = CONFLICT_BACKOFF_S,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if credentials is None:
            credentials = boto3.Session().get_credentials()
            if credentials is None:
                raise ValueError("no AWS credentials found to sign tool requests with")
        # A stage path is part of the base (https://id.execute-api.region.amazonaws.com/prod).
        self._base_url = tools_api_url.rstrip("/")
        self._region = region
        self._schemas = schemas
        self._credentials = credentials
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout_s)
        self._timeout_s = timeout_s
        self._conflict_retries = conflict_retries
        self._conflict_backoff_s = conflict_backoff_s

    def schemas(self, agent: AgentConfig) -> list[dict[str, Any]]:
        return self._schemas(agent)

    async def invoke(self, call_sid: str, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Run one tool for one call. `tool` must be a ToolName (the names schemas() offers): else ValueError."""
        name = ToolName(tool)
        body = ToolRequest(call_sid=call_sid, arguments=dict(arguments)).model_dump_json().encode("utf-8")
        url = f"{self._base_url}/tools/{name.value}"
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._post_until_settled(name, url, body)
        except TimeoutError:
            return _failed(name, "timeout", f"no answer within {self._timeout_s} s")
        except httpx.HTTPError as exc:
            return _failed(name, "transport", type(exc).__name__)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _post_until_settled(self, name: ToolName, url: str, body: bytes) -> ToolResult:
        retries = 0
        while True:
            response = await self._post(url, body)
            if response.status_code != httpx.codes.CONFLICT or retries == self._conflict_retries:
                return _result(name, response)
            await asyncio.sleep(self._conflict_backoff_s * 2**retries)
            retries += 1

    async def _post(self, url: str, body: bytes) -> httpx.Response:
        frozen = await asyncio.to_thread(self._credentials.get_frozen_credentials)
        request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
        # Signed afresh for every attempt: the signature carries its time (X-Amz-Date).
        SigV4Auth(frozen, SIGNING_SERVICE, self._region).add_auth(request)
        return await self._http.post(url, content=body, headers=dict(request.headers.items()))


def _result(name: ToolName, response: httpx.Response) -> ToolResult:
    status = response.status_code
    if status == httpx.codes.OK:
        try:
            result = ToolResult.model_validate_json(response.content)
        except ValidationError as exc:
            return _failed(name, "bad_response", f"not a ToolResult ({exc.error_count()} problems)")
        if result.tool is not name:
            return _failed(name, "bad_response", f"a result for {result.tool.value}")
        return result
    if status == httpx.codes.CONFLICT:
        return _failed(name, "in_progress", "still in progress after the retries")
    if status >= httpx.codes.INTERNAL_SERVER_ERROR:
        return _failed(name, "server_error", f"HTTP {status}")
    # 403 (signature, role) or 404 (unknown call or tool): a deployment problem rather than a passing one.
    return _failed(name, "client_error", f"HTTP {status}", error=True)


def _failed(name: ToolName, kind: str, detail: str, *, error: bool = False) -> ToolResult:
    extra = {"tool": name.value, "kind": kind, "detail": detail}
    if error:
        logger.error("tool action failed", extra=extra)
    else:
        logger.warning("tool action failed", extra=extra)
    count("ToolErrors", tool=name.value, kind=kind)
    return ToolResult(
        tool=name, outcome=ToolOutcome.FAILED, message=f"The {name.value} action is not available right now."
    )
