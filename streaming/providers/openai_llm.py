"""The language model on OpenAI's chat completions API, or on any server that speaks it, streamed with tools.

One `openai.AsyncOpenAI` client per process (`openai_client`), shared by every call: its connection pool
keeps connections to the API open, so a reply does not pay for a TLS handshake on the caller's time. An
`OpenAILanguageModel` holds an agent's model, temperature and max tokens and no state between replies:
one per agent (or per call) serves any number of calls at once.

Text deltas are handed on as they arrive. Tool calls arrive as fragments keyed by their index (several in
one response when the model calls tools in parallel); each is handed on whole, as one ToolCall, when the
model has finished.

The client's own retries are off (max_retries=0): it does not know the latency budget, and a retry after
some text was spoken would say it twice. Ours (ReplyDeadlines) is one retry at most, before anything was
handed on, for failures that another attempt can fix: a connection error, a timeout, 408/409/429, 5xx, an
error event or a cut in the stream. Anything else, or a second failure, is a LanguageModelError.
"""

import asyncio
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final, cast

import openai
from openai.types.chat import (
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallParam,
    ChatCompletionToolParam,
)

from streaming.providers.base import LanguageModelError, LlmEvent, ReplyDeadlines, TextDelta, ToolCall
from streaming.providers.retry import RetryableError, with_one_retry
from switchboard.agent import LanguageModel as LanguageModelSettings
from switchboard.observability import logger
from switchboard.state import ChatMessage

PROVIDER: Final = "openai"
# Reaching the API: anything slower than this will not make the first-token deadline anyway.
CONNECT_TIMEOUT_S: Final = 2.0
# The client's own backstop for one read or write; ReplyDeadlines are what end a slow reply.
READ_TIMEOUT_S: Final = 30.0
_RETRYABLE_STATUS: Final = frozenset({408, 409, 429})


def openai_client(api_key: str, *, base_url: str | None = None) -> openai.AsyncOpenAI:
    """The process's client: no retries of its own (ours know the latency budget), short connect timeout.

    `base_url` points it at another OpenAI-compatible server (vLLM, Ollama, a proxy, a local test server).
    """
    return openai.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=openai.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    )


@dataclass(slots=True)
class _PendingCall:
    call_id: str
    name: str
    arguments: str


def _tool_call_param(call: Mapping[str, Any]) -> ChatCompletionMessageToolCallParam:
    try:
        function = call["function"]
        return {
            "id": str(call["id"]),
            "type": "function",
            "function": {"name": str(function["name"]), "arguments": str(function["arguments"])},
        }
    except (KeyError, TypeError) as exc:
        raise ValueError(f"an assistant tool call is not in chat-completion format: missing {exc}") from exc


def chat_messages(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    """The engine's history as chat-completion message params (they are already shaped alike)."""
    converted: list[ChatCompletionMessageParam] = []
    for message in messages:
        content = message.content or ""
        match message.role:
            case "system":
                converted.append({"role": "system", "content": content})
            case "user":
                converted.append({"role": "user", "content": content})
            case "assistant":
                if message.tool_calls:
                    converted.append(
                        {
                            "role": "assistant",
                            "content": message.content or None,
                            "tool_calls": [_tool_call_param(call) for call in message.tool_calls],
                        }
                    )
                elif content:
                    converted.append({"role": "assistant", "content": content})
                # An assistant message with neither (a reply cut before a word was heard) is no message.
            case "tool":
                if not message.tool_call_id:
                    raise ValueError("a tool message has no tool_call_id")
                converted.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": content})
    return converted


def _status_is_retryable(status: int) -> bool:
    return status in _RETRYABLE_STATUS or status >= 500


class OpenAILanguageModel:
    """LanguageModel on chat completions, for one agent's settings; every reply's state is its own."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        settings: LanguageModelSettings,
        *,
        deadlines: ReplyDeadlines | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._deadlines = deadlines or ReplyDeadlines()

    async def reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]
    ) -> AsyncGenerator[LlmEvent]:
        params = chat_messages(messages)
        # OpenAI rejects an empty `tools` list: no tools means no key at all.
        tool_params = [cast(ChatCompletionToolParam, dict(tool)) for tool in tools] or openai.omit
        attempts = with_one_retry(
            lambda started: self._attempt(params, tool_params, started),
            deadlines=self._deadlines,
            name=self._name,
            provider=PROVIDER,
        )
        async with aclosing(attempts) as events:
            async for event in events:
                yield event

    @property
    def _name(self) -> str:
        return f"{PROVIDER} model {self._settings.model!r}"

    async def _attempt(
        self,
        messages: list[ChatCompletionMessageParam],
        tools: list[ChatCompletionToolParam] | openai.Omit,
        started: float,
    ) -> AsyncGenerator[LlmEvent]:
        """One request: its events as they come; RetryableError for what another attempt may fix."""
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        settings = self._settings
        total_deadline = started + deadlines.total_s
        first_deadline = min(loop.time() + deadlines.first_token_s, total_deadline)
        try:
            async with asyncio.timeout_at(first_deadline):
                stream = await self._client.chat.completions.create(
                    model=settings.model,
                    messages=messages,
                    temperature=settings.temperature,
                    max_tokens=settings.max_tokens,
                    tools=tools,
                    stream=True,
                    # The last chunk then carries the token counts, logged at DEBUG for cost tracking.
                    stream_options={"include_usage": True},
                )
        except TimeoutError as exc:
            raise RetryableError("timeout", f"no response within {deadlines.first_token_s} s") from exc
        except openai.OpenAIError as exc:
            raise self._classified(exc) from exc
        async with stream:
            calls: dict[int, _PendingCall] = {}
            finish: str | None = None
            started_writing = False
            while True:
                deadline = total_deadline if started_writing else first_deadline
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    if started_writing:
                        raise RetryableError("timeout", f"the reply took longer than {deadlines.total_s} s") from exc
                    raise RetryableError("timeout", f"no first token within {deadlines.first_token_s} s") from exc
                except openai.OpenAIError as exc:
                    raise self._classified(exc) from exc
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta.content:
                        started_writing = True
                        yield TextDelta(delta.content)
                    for fragment in delta.tool_calls or ():
                        started_writing = True
                        pending = calls.get(fragment.index)
                        if pending is None:
                            # Some compatible servers leave ids out; the engine needs one to pair the result.
                            call_id = fragment.id or f"call_{uuid.uuid4().hex[:24]}"
                            pending = calls[fragment.index] = _PendingCall(call_id, "", "")
                        if fragment.function is not None:
                            if fragment.function.name and not pending.name:
                                pending.name = fragment.function.name
                            pending.arguments += fragment.function.arguments or ""
                    if choice.finish_reason is not None and finish is None:
                        finish = choice.finish_reason
                        started_writing = True
                        # Whatever the reason (some compatible servers say "stop" after tool calls), the
                        # calls are complete now: hand them on without waiting for the usage chunk.
                        for index in sorted(calls):
                            pending = calls[index]
                            yield ToolCall(pending.call_id, pending.name, pending.arguments)
                if chunk.usage is not None:
                    logger.debug(
                        "language model usage",
                        extra={
                            "provider": PROVIDER,
                            "prompt_tokens": chunk.usage.prompt_tokens,
                            "completion_tokens": chunk.usage.completion_tokens,
                        },
                    )
            if finish is None:
                raise RetryableError("stream_cut", "the stream ended before the model finished its reply")
            if finish == "length":
                logger.info("the reply reached max_tokens", extra={"provider": PROVIDER})

    def _classified(self, error: openai.OpenAIError) -> Exception:
        """RetryableError when another attempt may succeed, else the LanguageModelError to raise."""
        if isinstance(error, openai.APITimeoutError):
            return RetryableError("timeout", "the request timed out")
        if isinstance(error, openai.APIConnectionError):
            return RetryableError("connection", f"connection failed: {error.__cause__ or error}")
        if isinstance(error, openai.APIStatusError):
            detail = error.message  # "Error code: 503 - <the server's message>"
            if _status_is_retryable(error.status_code):
                return RetryableError("rate_limited" if error.status_code == 429 else "server_error", detail)
            return LanguageModelError(f"{self._name} rejected the request ({detail})")
        if isinstance(error, openai.APIError):
            # An error event inside the stream: the server failed mid-reply.
            return RetryableError("stream_error", f"error event in the stream: {error.message}")
        return LanguageModelError(f"{self._name}: client error: {error}")
