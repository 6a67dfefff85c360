"""A local OpenAI-compatible chat completions server, for the real `openai` client (set its base_url).

It streams `chat.completion.chunk` server-sent events the way api.openai.com does (a role chunk, content
deltas, tool-call fragments keyed by index, the finish chunk, the usage chunk when asked, `data: [DONE]`)
and can misbehave on purpose: an HTTP error, a slow first token, a connection dropped mid-stream. It
records every request body, and whether the client went away before the end of its stream.

What it answers is scripted: `enqueue()` replies in order, or `answer_with()` a function of the request
(what the benchmark uses: one latency profile for every request). FastAPI under real uvicorn, in the
caller's event loop: `async with running_openai_server() as server: ... server.url ...`.
"""

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from streaming.providers.simulated import tokens
from tests.support.net import serving

MODEL: Final = "gpt-4o-mini"


@dataclass(frozen=True)
class ScriptedToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """A streamed reply: `text` in simulated-BPE tokens, then `tool_calls`, their arguments in pieces.

    `first_token_s`: the wait before the first content chunk (the role chunk and headers go at once);
    `token_interval_s`: between later chunks. `drop_after`: cut the connection after this many content
    chunks, without the finish chunk or [DONE]. `error_after`: send an error event after that many.
    `finish_reason`: None picks "tool_calls" when there are tool calls, else "stop".
    """

    text: str = ""
    tool_calls: Sequence[ScriptedToolCall] = ()
    first_token_s: float = 0.0
    token_interval_s: float = 0.0
    drop_after: int | None = None
    error_after: int | None = None
    finish_reason: str | None = None
    argument_piece_chars: int = 7


@dataclass(frozen=True)
class Failure:
    """An HTTP error with OpenAI's error body."""

    status: int
    message: str = "The server had an error while processing your request."
    type: str = "server_error"


Answer = Completion | Failure


@dataclass
class Exchange:
    """One request as the server saw it, and how its stream ended."""

    body: dict[str, Any]
    completed: bool = False
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    # time.perf_counter when each event of the body was handed to the server to write (for the benchmark).
    written: list[float] = field(default_factory=list)


class _DroppedConnection(Exception):
    """Raised inside the response: uvicorn then closes the socket mid-body, as a broken stream looks."""


@dataclass
class OpenAIServer:
    url: str = ""
    exchanges: list[Exchange] = field(default_factory=list)
    _queue: list[Answer] = field(default_factory=list)
    _answer: Callable[[dict[str, Any]], Answer] | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def enqueue(self, *answers: Answer) -> None:
        """The next requests get these answers, in order (before any `answer_with` function)."""
        self._queue.extend(answers)

    def answer_with(self, answer: Callable[[dict[str, Any]], Answer]) -> None:
        """Requests with nothing enqueued are answered by `answer(request_body)`."""
        self._answer = answer

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [exchange.body for exchange in self.exchanges]

    async def wait_for_requests(self, count: int) -> None:
        while len(self.exchanges) < count:
            self._arrived.clear()
            await self._arrived.wait()

    def _next(self, body: dict[str, Any]) -> Answer:
        if self._queue:
            return self._queue.pop(0)
        if self._answer is not None:
            return self._answer(body)
        return Failure(500, "the test server has no answer scripted for this request")

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            body = await request.json()
            exchange = Exchange(body)
            self.exchanges.append(exchange)
            self._arrived.set()
            answer = self._next(body)
            if isinstance(answer, Failure):
                error = {"message": answer.message, "type": answer.type, "param": None, "code": None}
                return JSONResponse({"error": error}, status_code=answer.status)
            if not body.get("stream"):
                return JSONResponse({"error": {"message": "this server only streams"}}, status_code=400)
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = self._events(answer, str(body.get("model", MODEL)), include_usage)
            return PacedBody(events, exchange, media_type="text/event-stream; charset=utf-8")

        return app

    def _events(self, answer: Completion, model: str, include_usage: bool) -> list[tuple[float, bytes | None]]:
        """(delay before, SSE bytes) pairs; None bytes: drop the connection there."""
        completion_id = f"chatcmpl-{next(self._ids):06d}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
            choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_local",
                "choices": [] if usage is not None else choices,
                "usage": usage,
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        contents: list[bytes] = [chunk({"content": piece}) for piece in tokens(answer.text)]
        for index, call in enumerate(answer.tool_calls):
            first = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            contents.append(chunk({"tool_calls": [first]}))
            size = answer.argument_piece_chars
            for start in range(0, len(call.arguments), size):
                piece = call.arguments[start : start + size]
                contents.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        events: list[tuple[float, bytes | None]] = [(0.0, chunk({"role": "assistant", "content": "", "refusal": None}))]
        for count, data in enumerate(contents):
            if count == answer.drop_after:
                events.append((0.0, None))
                return events
            if count == answer.error_after:
                error = {"error": {"message": "The model stopped unexpectedly.", "type": "server_error"}}
                events.append((0.0, f"data: {json.dumps(error)}\n\n".encode()))
                return events
            events.append((answer.first_token_s if count == 0 else answer.token_interval_s, data))
        finish = answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop")
        events.append((answer.first_token_s if not contents else answer.token_interval_s, chunk({}, finish)))
        if include_usage:
            usage = {"prompt_tokens": 42, "completion_tokens": len(contents), "total_tokens": 42 + len(contents)}
            events.append((0.0, chunk({}, usage=usage)))
        events.append((0.0, b"data: [DONE]\n\n"))
        return events


class PacedBody(Response):
    """A chunked body sent piece by piece on a schedule, that notices at once when the client goes away.

    `events` are (delay before, bytes) pairs; None bytes drop the connection there. Starlette's
    StreamingResponse only finds out about a client that left on its next send; one that hangs up
    while the "model" is thinking must show up as disconnected straight away.
    """

    def __init__(self, events: list[tuple[float, bytes | None]], exchange: Exchange, *, media_type: str) -> None:
        super().__init__()
        self._events = events
        self._exchange = exchange
        self._content_type = media_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = self._exchange

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not exchange.completed:
                exchange.disconnected.set()

        listener = asyncio.create_task(listen())
        try:
            # Chunked, as a stream is: Response's own headers would say content-length 0.
            headers = [(b"content-type", self._content_type.encode()), (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for delay, data in self._events:
                if delay > 0:
                    await asyncio.wait({listener}, timeout=delay)
                if listener.done():
                    return
                if data is None:
                    raise _DroppedConnection("dropped on purpose")
                # Taken as the event is handed to the server: after send() returns, the client may have it already.
                exchange.written.append(time.perf_counter())
                await send({"type": "http.response.body", "body": data, "more_body": True})
            exchange.completed = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            exchange.disconnected.set()
        finally:
            listener.cancel()


@asynccontextmanager
async def running_openai_server() -> AsyncIterator[OpenAIServer]:
    """The server on a free port of 127.0.0.1 for the length of the block; `server.url` is its base_url."""
    server = OpenAIServer()
    async with serving(server.app(), "OpenAI test server") as url:
        server.url = f"{url}/v1"
        yield server
