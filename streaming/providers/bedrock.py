"""The language model on Amazon Bedrock's Converse API (`converse_stream`), streamed with tools.

The second implementation of LanguageModel, for a deployment that stays inside AWS: the same history and
the same OpenAI-format tool schemas go in, the same TextDelta and ToolCall events come out. Which one a
call uses is the agent's `llm.provider`.

boto3 is synchronous, so each reply's event stream is read in a worker thread (a pool of the process's
own, not the loop's default executor, which a few slow streams would fill) and every event is handed
to the event loop as it arrives. When the engine stops listening (barge-in) the worker is told to stop,
and a read it is blocked in is cut at once (urllib3's shutdown), so the HTTP response closes promptly
even while the model is silent.

Converse wants what chat completions does not: the system prompt apart (`system`), strictly alternating
user and assistant messages starting with the user, tool results as `toolResult` blocks of a user
message (several results of one round in one message), and tool arguments as JSON objects. The history
is converted accordingly (`converse_messages`).

Deadlines and the one retry are those of the OpenAI adapter (ReplyDeadlines): retried before anything
was handed on, for throttling, timeouts, 5xx-like and connection errors only; else LanguageModelError.
botocore's own retries are off for the same reason as the openai client's.
"""

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.eventstream import EventStream
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from streaming.providers.base import LanguageModelError, LlmEvent, ReplyDeadlines, TextDelta, ToolCall
from streaming.providers.retry import RetryableError, with_one_retry
from switchboard.agent import LanguageModel as LanguageModelSettings
from switchboard.observability import logger
from switchboard.state import ChatMessage

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime.client import BedrockRuntimeClient
    from mypy_boto3_bedrock_runtime.type_defs import (
        ContentBlockTypeDef,
        ConverseStreamOutputTypeDef,
        MessageTypeDef,
        SystemContentBlockTypeDef,
        ToolConfigurationTypeDef,
        ToolTypeDef,
    )

PROVIDER: Final = "bedrock"
# Replies streaming at once in this process: one worker thread and one pooled connection each.
MAX_CONCURRENT_STREAMS: Final = 128
CONNECT_TIMEOUT_S: Final = 2.0
# A read that waits longer than this ends the worker (ReplyDeadlines end the reply itself much sooner).
READ_TIMEOUT_S: Final = 20.0
# Converse needs the conversation to open with the user; a call opens with the agent's greeting.
CALL_CONNECTED: Final = "[The phone call has connected.]"
_RETRYABLE_CODES: Final = frozenset(
    code.lower()
    for code in (
        "ThrottlingException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelStreamErrorException",
        "ModelTimeoutException",
        "ModelNotReadyException",
    )
)
# botocore's (connect, read timeouts, closed connections) and urllib3's (a stream cut while it is read).
_CONNECTION_ERRORS: Final = (BotocoreConnectionError, HTTPClientError, urllib3.exceptions.HTTPError, OSError)
_STREAM_THREADS = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_STREAMS, thread_name_prefix="bedrock-stream")


def bedrock_runtime_client(region: str, *, endpoint_url: str | None = None) -> "BedrockRuntimeClient":
    """The process's bedrock-runtime client: no retries of its own, a pool as large as the worker pool."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        max_pool_connections=MAX_CONCURRENT_STREAMS,
        tcp_keepalive=True,
    )
    return boto3.client("bedrock-runtime", region_name=region, endpoint_url=endpoint_url, config=config)


# -- the request ----------------------------------------------------------------------------------------


def _tool_use(call: Mapping[str, Any]) -> "ContentBlockTypeDef":
    try:
        function = call["function"]
        call_id, name, arguments = str(call["id"]), str(function["name"]), str(function["arguments"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"an assistant tool call is not in chat-completion format: missing {exc}") from exc
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        parsed = None
    # Converse takes the input as a JSON object. Arguments that were not one were refused by the engine
    # (the tool result says so), so an empty object loses nothing the model needs.
    return {"toolUse": {"toolUseId": call_id, "name": name, "input": parsed if isinstance(parsed, dict) else {}}}


def converse_messages(
    messages: Sequence[ChatMessage],
) -> tuple[list["SystemContentBlockTypeDef"], list["MessageTypeDef"]]:
    """The engine's history as Converse's `system` blocks and alternating user/assistant messages."""
    system: list[SystemContentBlockTypeDef] = []
    turns: list[tuple[str, list[ContentBlockTypeDef]]] = []

    def add(role: str, blocks: list["ContentBlockTypeDef"]) -> None:
        if not blocks:
            return
        if turns and turns[-1][0] == role:
            # Converse rejects two messages of one role in a row: tool results of one round, or a
            # message whose neighbour was skipped, join the message before.
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks)))

    for message in messages:
        text = (message.content or "").strip()
        match message.role:
            case "system":
                # Converse has no system messages in the conversation: every one (the prompt, and the
                # knowledge passages the engine inserts) goes to `system`, in order.
                if text:
                    system.append({"text": text})
            case "user":
                add("user", [{"text": text}] if text else [])
            case "assistant":
                blocks: list[ContentBlockTypeDef] = [{"text": text}] if text else []
                blocks.extend(_tool_use(call) for call in message.tool_calls or ())
                add("assistant", blocks)
            case "tool":
                if not message.tool_call_id:
                    raise ValueError("a tool message has no tool_call_id")
                result: ContentBlockTypeDef = {
                    "toolResult": {"toolUseId": message.tool_call_id, "content": [{"text": text or "{}"}]}
                }
                add("user", [result])
    if turns and turns[0][0] != "user":
        turns.insert(0, ("user", [{"text": CALL_CONNECTED}]))
    converted: list[MessageTypeDef] = [
        {"role": "user" if role == "user" else "assistant", "content": blocks} for role, blocks in turns
    ]
    return system, converted


def tool_configuration(tools: Sequence[Mapping[str, Any]]) -> "ToolConfigurationTypeDef | None":
    """OpenAI function-tool schemas as Converse tool specs; None when there are none (Converse wants 1+)."""
    specs: list[ToolTypeDef] = []
    for tool in tools:
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, Mapping) or not function.get("name"):
            raise ValueError(f"not an OpenAI function tool: {tool!r}")
        spec: dict[str, Any] = {
            "name": function["name"],
            "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append(cast("ToolTypeDef", {"toolSpec": spec}))
    return {"tools": specs} if specs else None


# -- the stream -----------------------------------------------------------------------------------------


class _End:
    """The worker read the stream to its end."""


_END: Final = _End()


class _StreamReader:
    """One converse_stream request read in a worker thread, each event handed to the loop as it arrives."""

    def __init__(self, client: "BedrockRuntimeClient", request: dict[str, Any], loop: asyncio.AbstractEventLoop):
        self._client = client
        self._request = request
        self._loop = loop
        self.queue: asyncio.Queue[ConverseStreamOutputTypeDef | BaseException | _End] = asyncio.Queue()
        self._stopped = threading.Event()
        self._stream: EventStream[ConverseStreamOutputTypeDef] | None = None

    def run(self) -> None:
        """In the worker thread: send the request and hand over its events, until the end or stop()."""
        try:
            stream = self._client.converse_stream(**self._request)["stream"]
        except Exception as exc:
            self._hand(exc)
            return
        # Published before the stop check: stop() either sees the stream or is seen here.
        self._stream = stream
        try:
            if self._stopped.is_set():
                return
            for event in stream:
                if self._stopped.is_set():
                    return
                self._hand(event)
            self._hand(_END)
        except Exception as exc:
            if not self._stopped.is_set():
                self._hand(exc)
        finally:
            stream.close()

    def stop(self) -> None:
        """From the loop: nobody listens any more. A read blocked on a quiet stream is cut at once."""
        self._stopped.set()
        stream = self._stream
        if stream is None:
            return  # still sending the request: run() sees the flag when it has the stream
        # urllib3's shutdown() exists to end a blocking read from another thread (close() would wait for
        # the reader's lock). botocore keeps the response private; without it the reader ends at the next
        # event or at READ_TIMEOUT_S.
        raw = getattr(stream, "_raw_stream", None)
        shutdown = getattr(raw, "shutdown", None)
        if shutdown is not None:
            with suppress(ValueError, RuntimeError, OSError):
                shutdown()

    def _hand(self, item: "ConverseStreamOutputTypeDef | BaseException | _End") -> None:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            self._stopped.set()  # the loop is closed: nobody is listening any more


@dataclass(slots=True)
class _PendingCall:
    call_id: str
    name: str
    arguments: str = ""


class BedrockLanguageModel:
    """LanguageModel on Converse, for one agent's settings (`model` is the Bedrock model or inference
    profile id); every reply's state is its own, so one per agent serves any number of calls at once."""

    def __init__(
        self,
        client: "BedrockRuntimeClient",
        settings: LanguageModelSettings,
        *,
        deadlines: ReplyDeadlines | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._deadlines = deadlines or ReplyDeadlines()

    @property
    def _name(self) -> str:
        return f"{PROVIDER} model {self._settings.model!r}"

    def request(self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The converse_stream parameters for this history and these tools."""
        system, converted = converse_messages(messages)
        request: dict[str, Any] = {
            "modelId": self._settings.model,
            "messages": converted,
            "inferenceConfig": {"maxTokens": self._settings.max_tokens, "temperature": self._settings.temperature},
        }
        if system:
            request["system"] = system
        if (configuration := tool_configuration(tools)) is not None:
            request["toolConfig"] = configuration
        return request

    async def reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]
    ) -> AsyncGenerator[LlmEvent]:
        request = self.request(messages, tools)
        attempts = with_one_retry(
            lambda started: self._attempt(request, started),
            deadlines=self._deadlines,
            name=self._name,
            provider=PROVIDER,
        )
        async with aclosing(attempts) as events:
            async for event in events:
                yield event

    async def _attempt(self, request: dict[str, Any], started: float) -> AsyncGenerator[LlmEvent]:
        """One request: its events as they come; RetryableError for what another attempt may fix."""
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        total_deadline = started + deadlines.total_s
        first_deadline = min(loop.time() + deadlines.first_token_s, total_deadline)
        reader = _StreamReader(self._client, request, loop)
        # The reader hands every error over through its queue; the future has nothing to tell.
        loop.run_in_executor(_STREAM_THREADS, reader.run)
        queue = reader.queue
        calls: dict[int, _PendingCall] = {}
        finish: str | None = None
        started_writing = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(total_deadline if started_writing else first_deadline):
                        item = await queue.get()
                except TimeoutError as exc:
                    if started_writing:
                        raise RetryableError("timeout", f"the reply took longer than {deadlines.total_s} s") from exc
                    raise RetryableError("timeout", f"no first token within {deadlines.first_token_s} s") from exc
                if isinstance(item, _End):
                    break
                if isinstance(item, BaseException):
                    raise self._classified(item) from item
                if (start := item.get("contentBlockStart")) is not None:
                    tool = start["start"].get("toolUse")
                    if tool is not None:
                        started_writing = True
                        calls[start["contentBlockIndex"]] = _PendingCall(tool["toolUseId"], tool["name"])
                elif (block := item.get("contentBlockDelta")) is not None:
                    delta = block["delta"]
                    if text := delta.get("text"):
                        started_writing = True
                        yield TextDelta(text)
                    elif (tool_delta := delta.get("toolUse")) is not None:
                        started_writing = True
                        pending = calls.get(block["contentBlockIndex"])
                        if pending is not None:
                            pending.arguments += tool_delta.get("input", "")
                elif (stop_event := item.get("messageStop")) is not None:
                    started_writing = True
                    finish = stop_event["stopReason"]
                    for index in sorted(calls):
                        pending = calls[index]
                        yield ToolCall(pending.call_id, pending.name, pending.arguments)
                elif (metadata := item.get("metadata")) is not None:
                    usage = metadata.get("usage", {})
                    logger.debug(
                        "language model usage",
                        extra={
                            "provider": PROVIDER,
                            "prompt_tokens": usage.get("inputTokens"),
                            "completion_tokens": usage.get("outputTokens"),
                        },
                    )
            if finish is None:
                raise RetryableError("stream_cut", "the stream ended before the model finished its reply")
            if finish == "max_tokens":
                logger.info("the reply reached max_tokens", extra={"provider": PROVIDER})
        finally:
            reader.stop()

    def _classified(self, error: BaseException) -> Exception:
        """RetryableError when another attempt may succeed, else the LanguageModelError to raise."""
        if isinstance(error, ClientError):
            # Errors in the stream (EventStreamError) carry the event's name, e.g. "throttlingException".
            code = str(error.response.get("Error", {}).get("Code", ""))
            message = str(error.response.get("Error", {}).get("Message", "")) or str(error)
            detail = f"{code}: {message}"
            if code.lower() in _RETRYABLE_CODES:
                return RetryableError("rate_limited" if "throttling" in code.lower() else "server_error", detail)
            return LanguageModelError(f"{self._name} rejected the request ({detail})")
        if isinstance(error, _CONNECTION_ERRORS):
            # Connecting, reading (timeouts included) or a stream cut mid-way.
            return RetryableError("connection", f"connection failed: {error}")
        # The rest (no credentials, parameters the service model refuses) would fail the same way again.
        return LanguageModelError(f"{self._name}: client error: {error}")
