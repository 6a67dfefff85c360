"""Running the media server under uvicorn, with a shutdown that drains calls instead of dropping them.

uvicorn's own SIGTERM handling closes every WebSocket at once (1012) and stops. Here the signals start
the app's drain first, and uvicorn is told to exit only when the drain is over:

- SIGTERM: drain (no new calls, running ones go on up to drain_seconds, then are handed over), then exit.
- SIGINT, or a second SIGTERM: hand the running calls over now, then exit.
"""

import asyncio
import contextlib
import signal
import threading
from collections.abc import Generator

import uvicorn

from streaming.server import MediaServerApp
from switchboard.observability import logger

# A Twilio message is a few hundred bytes (a 20 ms media frame is ~400): anything near this is not Twilio.
MAX_MESSAGE_BYTES = 64 * 1024
# uvicorn's own last resort once the drain is over: connections still open by then are closed (1012)
# and their tasks cancelled after this long.
GRACEFUL_SHUTDOWN_S = 10


def uvicorn_config(app: MediaServerApp, *, port: int, host: str = "0.0.0.0") -> uvicorn.Config:  # noqa: S104
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # The websockets library's Sans-I/O protocol: what `--ws websockets` becomes in uvicorn, without
        # the deprecated legacy implementation's extra tasks per connection.
        ws="websockets-sansio",
        ws_max_size=MAX_MESSAGE_BYTES,
        # μ-law in base64 barely compresses; deflating every frame would cost CPU for nothing.
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


class MediaServer(uvicorn.Server):
    """uvicorn.Server whose SIGTERM drains the app's calls before the server stops."""

    def __init__(self, config: uvicorn.Config, app: MediaServerApp) -> None:
        super().__init__(config)
        self._app = app
        self._shutdown: asyncio.Task[None] | None = None

    def begin_shutdown(self) -> None:
        """Start draining and exit once drained; called again, hand the calls over at once."""
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_task(self._drain_then_exit(), name="drain")
        else:
            self._app.hand_over_now()

    def hand_over_and_exit(self) -> None:
        self.begin_shutdown()
        self._app.hand_over_now()

    async def _drain_then_exit(self) -> None:
        try:
            await self._app.drain()
        except Exception:
            logger.exception("the drain failed")
        finally:
            self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals can only be handled on the main thread (a server run in a test's thread has none).
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGTERM: self.begin_shutdown, signal.SIGINT: self.hand_over_and_exit}
        previous = {sig: signal.getsignal(sig) for sig in handlers}
        # Handled by the event loop, not signal.signal: the handlers start tasks, which only the loop may do.
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        try:
            yield
        finally:
            for sig, before in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, before)
