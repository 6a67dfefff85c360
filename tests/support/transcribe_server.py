"""A local Amazon Transcribe streaming service, in-process: an HTTP transport for the SDK's own client.

`LocalTranscribe` is handed to `TranscribeSpeechToText.create(transport=...)`. It answers
StartStreamTranscription as the service does, duplex, so the SDK's serializers, its SigV4 signing of
every event and its event-stream coding all run as against AWS; only the network is left out. Each request
is a `LocalStream`: the audio events it received, and what to answer (`results`, `exception`).

Every audio event's arrival and every answer's hand-over to the client are recorded (time.perf_counter),
so a benchmark can measure how long audio waits in the adapter and how long a result takes to come out.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from io import BytesIO
from typing import Any, Literal

from smithy_aws_event_stream.events import Event, EventMessage
from smithy_core.aio.types import AsyncBytesReader
from smithy_http import tuples_to_fields
from smithy_http.aio import HTTPResponse, interfaces
from smithy_http.aio.interfaces import HTTPRequest
from smithy_http.interfaces import HTTPRequestConfiguration


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    return EventMessage(headers=dict(headers), payload=payload).encode()


class LocalStream:
    """One StartStreamTranscription request as the service sees it: HTTP/2 headers, then event frames."""

    def __init__(self, request: HTTPRequest) -> None:
        self.headers = {field.name.lower(): field.as_string() for field in request.fields}
        self.audio_events: list[bytes] = []
        self.audio_arrivals: list[float] = []  # perf_counter when each audio event was decoded here
        self.answers_written: list[float] = []  # perf_counter when each answer was handed to the client
        self.ended = False  # the client's signed empty frame arrived
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(request))

    async def _read(self, request: HTTPRequest) -> None:
        source = AsyncBytesReader(request.body)
        while (signed := await Event.decode_async(source)) is not None:
            assert ":chunk-signature" in signed.message.headers  # every event is signed, as SigV4 requires
            if not signed.message.payload:
                self.ended = True  # Transcribe ends its output once the audio has ended
                self._out.put_nowait(None)
                break
            inner = Event.decode(BytesIO(signed.message.payload))
            assert inner is not None
            assert inner.message.headers[":event-type"] == "AudioEvent"
            self.audio_events.append(inner.message.payload)
            self.audio_arrivals.append(time.perf_counter())
            self._changed.set()

    @property
    def audio(self) -> bytes:
        return b"".join(self.audio_events)

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    def results(self, *results: dict[str, Any]) -> None:
        """A TranscriptEvent, in the JSON Transcribe puts on the wire."""
        payload = json.dumps({"Transcript": {"Results": list(results)}}).encode()
        headers = {":message-type": "event", ":event-type": "TranscriptEvent", ":content-type": "application/json"}
        self._out.put_nowait(event_message(headers, payload))

    def exception(self, kind: str, message: str) -> None:
        headers = {":message-type": "exception", ":exception-type": kind, ":content-type": "application/json"}
        self._out.put_nowait(event_message(headers, json.dumps({"Message": message}).encode()))

    async def body(self) -> AsyncIterator[bytes]:
        while (chunk := await self._out.get()) is not None:
            self.answers_written.append(time.perf_counter())
            yield chunk

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class LocalTranscribe:
    """An HTTP transport for the SDK client that answers as Transcribe streaming does, in-process: duplex,
    so the SDK's own serializers, SigV4 event signing and event-stream decoding all run."""

    SUPPORTS_DUPLEX_STREAMING: Literal[True] = True
    TIMEOUT_EXCEPTIONS: tuple[type[Exception], ...] = (TimeoutError,)

    def __init__(self) -> None:
        self.streams: list[LocalStream] = []
        self.refusals: list[tuple[int, str, str]] = []  # status, error type, message for the next requests
        self._opened = asyncio.Event()

    async def send(
        self, request: HTTPRequest, *, request_config: HTTPRequestConfiguration | None = None
    ) -> interfaces.HTTPResponse:
        if self.refusals:
            status, kind, message = self.refusals.pop(0)
            fields = tuples_to_fields([("x-amzn-errortype", f"{kind}:"), ("content-type", "application/json")])
            return HTTPResponse(status=status, fields=fields, body=json.dumps({"Message": message}).encode())
        stream = LocalStream(request)
        self.streams.append(stream)
        self._opened.set()
        fields = tuples_to_fields([("x-amzn-request-id", f"request-{len(self.streams)}")])
        return HTTPResponse(status=200, fields=fields, body=stream.body())

    async def stream(self, index: int) -> LocalStream:
        while len(self.streams) <= index:
            self._opened.clear()
            await self._opened.wait()
        return self.streams[index]

    async def close(self) -> None:
        for stream in self.streams:
            await stream.close()


def wire_result(result_id: str, text: str, start: float, end: float, *, partial: bool, stable: int) -> dict[str, Any]:
    """A Result as Transcribe's JSON has it; the first `stable` words marked stable."""
    words = text.rstrip(".").split()
    step = (end - start) / len(words)
    items = [
        {
            "Content": content,
            "StartTime": start + index * step,
            "EndTime": start + (index + 1) * step,
            "Type": "pronunciation",
            "Stable": index < stable,
        }
        for index, content in enumerate(words)
    ]
    alternative = {"Transcript": text, "Items": items}
    return {
        "ResultId": result_id,
        "StartTime": start,
        "EndTime": end,
        "IsPartial": partial,
        "Alternatives": [alternative],
    }
