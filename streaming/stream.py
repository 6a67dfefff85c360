"""The media stream as the call engine sees it: Twilio's side of one call, whatever carries it.

The server adapts a FastAPI WebSocket to this; tests may adapt anything else. Keeping the engine on this
small surface is what lets the turn loop be tested and benchmarked without a socket in the way.
"""

from typing import Protocol

from streaming.protocol import Dtmf, Mark, Media, Stop


class StreamClosed(Exception):
    """The socket is gone (Twilio hung up, the network dropped, or we closed it)."""


class MediaStream(Protocol):
    stream_sid: str

    async def receive(self) -> Media | Dtmf | Mark | Stop:
        """The next message after `start`. Malformed frames are logged, counted and skipped inside;
        `connected` and a repeated `start` never reach the engine. Raises StreamClosed."""
        ...

    async def send_media(self, ulaw: bytes) -> None:
        """Queue μ-law audio for playout. Never sleeps to pace: Twilio buffers and plays in order."""
        ...

    async def send_mark(self, name: str) -> None: ...

    async def send_clear(self) -> None: ...

    async def close(self) -> None:
        """Close the socket on purpose (the conversation is over). Idempotent."""
        ...
