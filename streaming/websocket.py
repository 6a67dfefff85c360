"""Twilio's side of one call over a Starlette WebSocket: the MediaStream the call engine runs on.

Before the engine sees anything, `wait_for_start` reads up to the `start` message: only `connected` may
come first. After that `receive` hands the engine media, dtmf, mark and stop, and skips everything else:
a frame that is not a Twilio message we understand (not JSON, an unknown event, bad base64, a binary
frame), a repeated `start`, a late `connected`, or a message for another stream. Skipped frames are
counted per kind (FrameProblems) and never end the call: a malformed frame costs that frame only.

Sends go out one at a time, in the order they were asked for. They do not wait for Twilio: Twilio
buffers and paces playout itself, so a send only waits when the socket's write buffer is full.
"""

import asyncio
import time
from collections.abc import Callable, Mapping

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from streaming.counters import count
from streaming.protocol import (
    Connected,
    Dtmf,
    MalformedMessage,
    Mark,
    Media,
    Start,
    StartInfo,
    Stop,
    clear_message,
    mark_message,
    media_message,
    parse_inbound,
)
from streaming.stream import StreamClosed
from switchboard.observability import logger

# What the engine is built for: G.711 μ-law, 8 kHz, mono. Anything else would play as noise.
MEDIA_ENCODING = "audio/x-mulaw"
MEDIA_SAMPLE_RATE = 8000
MEDIA_CHANNELS = 1

# A peer sending nothing but garbage must not flood the logs: one warning per stream per interval,
# carrying how many were not logged since the last one.
MALFORMED_LOG_INTERVAL_S = 10.0
# Closing waits for the socket's write buffer; a peer that stopped reading must not hold us forever.
CLOSE_TIMEOUT_S = 5.0
# WebSocket close reasons are limited to 123 bytes.
_MAX_CLOSE_REASON = 120


class ProtocolViolation(Exception):
    """The peer broke the stream's opening protocol. `kind` names it for logs and metrics."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class FrameProblems:
    """Frames of one stream that were skipped, counted per kind; logged at most once per interval.

    The counts become MalformedFrame metrics (one per kind) when the stream ends: a frame-by-frame
    metric would print an EMF line per bad frame, which a misbehaving peer could turn into a flood.
    """

    def __init__(
        self, *, log_interval_s: float = MALFORMED_LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._counts: dict[str, int] = {}
        self._log_interval_s = log_interval_s
        self._clock = clock
        self._next_log_at = float("-inf")
        self._not_logged = 0

    @property
    def counts(self) -> Mapping[str, int]:
        return self._counts

    def record(self, kind: str, detail: str = "") -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        now = self._clock()
        if now < self._next_log_at:
            self._not_logged += 1
            return
        logger.warning(
            "skipped a frame from Twilio",
            extra={"kind": kind, "detail": detail[:200], "not_logged_since_last": self._not_logged},
        )
        self._not_logged = 0
        self._next_log_at = now + self._log_interval_s

    def flush(self) -> None:
        """Emit the counts as MalformedFrame metrics and start counting again."""
        for kind, number in self._counts.items():
            count("MalformedFrame", number, kind=kind)
        self._counts.clear()


class TwilioWebSocket:
    """A Twilio Media Stream on an accepted Starlette WebSocket (the MediaStream protocol)."""

    def __init__(self, websocket: WebSocket, problems: FrameProblems | None = None) -> None:
        self._ws = websocket
        self.problems = problems if problems is not None else FrameProblems()
        self.stream_sid = ""
        self._send_lock = asyncio.Lock()
        # Set once the socket is gone for any reason: the peer left, a send failed, or we closed it.
        self._gone = asyncio.Event()
        self._close_started = False

    @property
    def closed(self) -> bool:
        return self._gone.is_set()

    async def wait_closed(self) -> None:
        await self._gone.wait()

    async def wait_for_start(self) -> StartInfo:
        """Read up to Twilio's `start` and return it. Raises ProtocolViolation or StreamClosed.

        `connected` may come first; malformed frames are skipped and counted as after the start. Any
        other message first (media before start, say) is a violation: audio must not flow before the
        stream is authenticated, and nothing but Twilio sends a stream without a start.
        """
        while True:
            text = await self._next_text()
            try:
                message = parse_inbound(text)
            except MalformedMessage as exc:
                if exc.kind == "bad_start":
                    raise ProtocolViolation("bad_start", str(exc)) from None
                self.problems.record(exc.kind, str(exc))
                continue
            if isinstance(message, Connected):
                continue
            if isinstance(message, Start):
                return self._accept_start(message)
            raise ProtocolViolation("before_start", f"{message.event} before start")

    def _accept_start(self, message: Start) -> StartInfo:
        start = message.start
        if message.stream_sid != start.stream_sid:
            raise ProtocolViolation("bad_start", "streamSid differs inside the start message")
        media = start.media_format
        if (media.encoding, media.sample_rate, media.channels) != (MEDIA_ENCODING, MEDIA_SAMPLE_RATE, MEDIA_CHANNELS):
            raise ProtocolViolation("bad_start", f"unsupported media format {media.encoding}/{media.sample_rate}")
        self.stream_sid = message.stream_sid
        return start

    async def receive(self) -> Media | Dtmf | Mark | Stop:
        if not self.stream_sid:
            raise RuntimeError("receive() before the stream started: call wait_for_start() first")
        while True:
            text = await self._next_text()
            try:
                message = parse_inbound(text)
            except MalformedMessage as exc:
                self.problems.record(exc.kind, str(exc))
                continue
            if isinstance(message, Start):
                self.problems.record("repeated_start")
                continue
            if isinstance(message, Connected):
                self.problems.record("late_connected")
                continue
            if message.stream_sid != self.stream_sid:
                self.problems.record("wrong_stream_sid")
                continue
            return message

    async def _next_text(self) -> str:
        while True:
            if self._gone.is_set():
                raise StreamClosed("the media stream is closed")
            try:
                message = await self._ws.receive()
            except RuntimeError as exc:  # Starlette's WebSocketDisconnected: a receive after the disconnect.
                self._gone.set()
                raise StreamClosed("the media stream is closed") from exc
            if message["type"] == "websocket.disconnect":
                self._gone.set()
                raise StreamClosed(f"Twilio closed the media stream ({message.get('code')})")
            text = message.get("text")
            if text is not None:
                return str(text)
            data = message.get("bytes") or b""
            self.problems.record("binary", f"{len(data)} bytes")

    async def send_media(self, ulaw: bytes) -> None:
        await self._send(media_message(self.stream_sid, ulaw))

    async def send_mark(self, name: str) -> None:
        await self._send(mark_message(self.stream_sid, name))

    async def send_clear(self) -> None:
        await self._send(clear_message(self.stream_sid))

    async def _send(self, text: str) -> None:
        if self._gone.is_set():
            raise StreamClosed("the media stream is closed")
        async with self._send_lock:
            try:
                await self._ws.send({"type": "websocket.send", "text": text})
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                # WebSocketDisconnect: the peer is gone; RuntimeError: the socket was closed meanwhile.
                self._gone.set()
                raise StreamClosed("the media stream is closed") from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket with `code` (1000: the conversation is over). Idempotent; never raises."""
        if self._close_started:
            return
        self._close_started = True
        self._gone.set()
        if self._ws.application_state is not WebSocketState.CONNECTED:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._ws.close(code, reason[:_MAX_CLOSE_REASON])
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            # The peer is already gone or not reading: there is nobody left to tell.
            pass
