"""A local Bedrock Runtime ConverseStream endpoint, for the real boto3 client (pass endpoint_url).

botocore's Stubber cannot stand in for converse_stream's answer: it validates a stubbed response against
the output shape, and the `stream` member must be a dict there while the client hands back an
EventStream. So this serves the real wire format instead: `POST /model/{modelId}/converse-stream`
answered with `application/vnd.amazon.eventstream`, each event encoded by the Smithy event-stream
library (smithy_aws_event_stream, from the Transcribe SDK) and decoded by botocore's own parser, the
modelled exception events in the stream, and HTTP errors with `x-amzn-ErrorType` as Bedrock sends them.
It records every request body and whether the client went away before the end of its stream.
"""

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from smithy_aws_event_stream.events import EventMessage

from streaming.providers.simulated import tokens
from tests.support.net import serving
from tests.support.openai_server import Exchange, PacedBody


@dataclass(frozen=True)
class ToolUse:
    id: str
    name: str
    input: str  # the JSON text, streamed in pieces


@dataclass(frozen=True)
class Converse:
    """A streamed reply: text in simulated-BPE tokens (one content block), then tool uses (a block each).

    `first_event_s` before the first content event, `interval_s` between later ones. `drop_after`: cut
    the connection after that many content events; `exception_after` (event name, message): send that
    modelled exception event after that many, e.g. ("throttlingException", "Too many tokens").
    """

    text: str = ""
    tool_uses: Sequence[ToolUse] = ()
    first_event_s: float = 0.0
    interval_s: float = 0.0
    stop_reason: str | None = None
    drop_after: int | None = None
    exception_after: tuple[int, str, str] | None = None
    input_piece_chars: int = 9


@dataclass(frozen=True)
class HttpFailure:
    status: int
    error_type: str
    message: str


BedrockAnswer = Converse | HttpFailure


def event(name: str, body: dict[str, Any]) -> bytes:
    headers = {":message-type": "event", ":event-type": name, ":content-type": "application/json"}
    return EventMessage(headers=dict(headers), payload=json.dumps(body).encode()).encode()


def exception(name: str, message: str) -> bytes:
    headers = {":message-type": "exception", ":exception-type": name, ":content-type": "application/json"}
    return EventMessage(headers=dict(headers), payload=json.dumps({"message": message}).encode()).encode()


@dataclass
class BedrockServer:
    url: str = ""
    exchanges: list[Exchange] = field(default_factory=list)
    model_ids: list[str] = field(default_factory=list)
    _queue: list[BedrockAnswer] = field(default_factory=list)

    def enqueue(self, *answers: BedrockAnswer) -> None:
        self._queue.extend(answers)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [exchange.body for exchange in self.exchanges]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/model/{model_id:path}/converse-stream")
        async def converse_stream(model_id: str, request: Request) -> Response:
            exchange = Exchange(await request.json())
            self.exchanges.append(exchange)
            self.model_ids.append(model_id)
            answer = self._queue.pop(0) if self._queue else HttpFailure(500, "InternalServerException", "no answer")
            if isinstance(answer, HttpFailure):
                return JSONResponse(
                    {"message": answer.message},
                    status_code=answer.status,
                    headers={"x-amzn-ErrorType": f"{answer.error_type}:http://internal.amazon.com/coral/"},
                )
            return PacedBody(_events(answer), exchange, media_type="application/vnd.amazon.eventstream")

        return app


def _events(answer: Converse) -> list[tuple[float, bytes | None]]:
    contents: list[bytes] = []
    index = 0
    pieces = tokens(answer.text)
    if pieces:
        contents.extend(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces)
        contents.append(event("contentBlockStop", {"contentBlockIndex": 0}))
        index = 1
    for use in answer.tool_uses:
        start = {"toolUse": {"toolUseId": use.id, "name": use.name}}
        contents.append(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        size = answer.input_piece_chars
        for offset in range(0, len(use.input), size):
            delta = {"toolUse": {"input": use.input[offset : offset + size]}}
            contents.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        contents.append(event("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    events: list[tuple[float, bytes | None]] = [(0.0, event("messageStart", {"role": "assistant"}))]
    for count, data in enumerate(contents):
        if count == answer.drop_after:
            events.append((0.0, None))
            return events
        if answer.exception_after is not None and count == answer.exception_after[0]:
            events.append((0.0, exception(answer.exception_after[1], answer.exception_after[2])))
            return events
        events.append((answer.first_event_s if count == 0 else answer.interval_s, data))
    reason = answer.stop_reason or ("tool_use" if answer.tool_uses else "end_turn")
    events.append(
        (answer.first_event_s if not contents else answer.interval_s, event("messageStop", {"stopReason": reason}))
    )
    usage = {"inputTokens": 42, "outputTokens": len(contents), "totalTokens": 42 + len(contents)}
    events.append((0.0, event("metadata", {"usage": usage, "metrics": {"latencyMs": 120}})))
    return events


@asynccontextmanager
async def running_bedrock_server() -> AsyncIterator[BedrockServer]:
    """The endpoint on a free port of 127.0.0.1 for the length of the block; `server.url` is endpoint_url."""
    server = BedrockServer()
    async with serving(server.app(), "Bedrock test server") as url:
        server.url = f"{url}"
        yield server
