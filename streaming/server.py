"""The media server: the WebSocket Twilio streams each call over, and the health check the load balancer polls.

One connection is one call. Its life, in the connection's own task:

1. Refused at once (1013 "try again later") while the service drains.
2. The upgrade's X-Twilio-Signature, then the `start` message (only `connected` may precede it, within
   start_timeout_seconds) and its single-use stream token. Any failure closes with 1008 before a single
   media frame reaches the engine, logs a WARNING and counts RejectedStream{reason}.
3. The call engine runs with the stream until it returns (stop, the conversation ended), or the socket
   goes away (the engine is told by StreamClosed and cancelled if it has not stopped within a grace
   period), or the drain hands the call over (engine cancelled, socket closed 1001).
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal, Protocol

import redis.asyncio as aioredis
from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from streaming.counters import count
from streaming.protocol import StartInfo
from streaming.running_calls import RunningCall, RunningCalls
from streaming.stream import MediaStream, StreamClosed
from streaming.stream_auth import POLICY_VIOLATION, StreamAuth, StreamRejected
from streaming.websocket import ProtocolViolation, TwilioWebSocket
from switchboard.call import valid_call_sid
from switchboard.observability import call_context, logger
from switchboard.stream_token import StreamTokenSigner
from switchboard.twilio_signature import TwilioSignature

ACTIVE_CALLS_METRIC = "ActiveCalls"
MEDIA_PATH = "/media"
HEALTH_PATH = "/healthz"

# Close codes (RFC 6455 §7.4.1 and the IANA registry).
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013


class Engine(Protocol):
    """What the server runs for each call (streaming.call.CallEngine in production)."""

    async def run(self, stream: MediaStream, start: StartInfo) -> object: ...


@dataclass(frozen=True, slots=True)
class Services:
    signature: TwilioSignature
    tokens: StreamTokenSigner
    redis: aioredis.Redis
    engine_factory: Callable[[], Engine]
    drain_seconds: float
    # Twilio sends `start` right after `connected`: a socket that has not within this is not Twilio's.
    start_timeout_seconds: float = 10.0
    # After the socket is gone, the engine has this long to notice (StreamClosed) and stop by itself
    # before it is cancelled; enough to write its last turn, short enough not to hold a lease for long.
    engine_stop_grace_seconds: float = 2.0
    # How often the task reports its ActiveCalls: the autoscaling signal (its Average across tasks is the
    # calls per task) and the dashboard's. CloudWatch's own resolution is a minute.
    active_calls_interval_seconds: float = 60.0


class Health(BaseModel):
    status: Literal["ok", "draining"]
    calls: int


class MediaServerApp(FastAPI):
    """The ASGI app: GET /healthz and the /media WebSocket, with the calls it is running."""

    def __init__(self, services: Services) -> None:
        super().__init__(
            title="Switchboard media server", lifespan=self._lifespan, docs_url=None, redoc_url=None, openapi_url=None
        )
        self.services = services
        self.calls = RunningCalls()
        self._auth = StreamAuth(services.signature, services.tokens, services.redis)
        self.add_api_route(HEALTH_PATH, self._health, methods=["GET"])
        self.add_api_websocket_route(MEDIA_PATH, self._media)

    async def drain(self) -> None:
        """Stop taking calls; hand the running ones over after drain_seconds. What SIGTERM starts."""
        await self.calls.drain(self.services.drain_seconds)

    def hand_over_now(self) -> None:
        """Cut a drain short: the running calls are handed over at once."""
        self.calls.hand_over_now()

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        # Fail at start, not on the first call, when Redis is unreachable: no call can run without it.
        try:
            await self.services.redis.ping()
        except RedisError as exc:
            raise RuntimeError(f"the media server cannot reach Redis: {exc}") from exc
        logger.info("media server ready")
        reporting = asyncio.create_task(self._report_active_calls(), name="active-calls")
        try:
            yield
        finally:
            reporting.cancel()
            await asyncio.gather(reporting, return_exceptions=True)
        logger.info("media server stopped", extra={"running_calls": len(self.calls)})

    async def _report_active_calls(self) -> None:
        """ActiveCalls every interval, zero included (a scale-in needs to see idle tasks), from the start."""
        while True:
            count(ACTIVE_CALLS_METRIC, len(self.calls))
            await asyncio.sleep(self.services.active_calls_interval_seconds)

    async def _health(self) -> JSONResponse:
        if self.calls.draining:
            return JSONResponse(Health(status="draining", calls=len(self.calls)).model_dump(), status_code=503)
        return JSONResponse(Health(status="ok", calls=len(self.calls)).model_dump())

    async def _media(self, websocket: WebSocket) -> None:
        await websocket.accept()
        stream = TwilioWebSocket(websocket)
        try:
            await self._serve(stream, websocket)
        finally:
            stream.problems.flush()

    async def _serve(self, stream: TwilioWebSocket, websocket: WebSocket) -> None:
        if self.calls.draining:
            await _refuse(stream, StreamRejected("draining", "try again later", code=TRY_AGAIN_LATER))
            return
        try:
            self._auth.check_upgrade(websocket.headers)
            async with asyncio.timeout(self.services.start_timeout_seconds):
                start = await stream.wait_for_start()
        except StreamRejected as exc:
            await _refuse(stream, exc)
            return
        except ProtocolViolation as exc:
            await _refuse(stream, StreamRejected(exc.kind, exc.kind.replace("_", " "), detail=exc.detail))
            return
        except TimeoutError:
            await _refuse(stream, StreamRejected("no_start", "no start message"))
            return
        except StreamClosed:
            logger.info("media stream closed before its start")
            return
        # The callSid is the peer's word until the token vouches for it: only a well-formed one goes into
        # the log context (it is trusted there, unmasked).
        with call_context(start.call_sid) if _is_call_sid(start.call_sid) else nullcontext():
            try:
                await self._auth.check_start(start)
            except StreamRejected as exc:
                await _refuse(stream, exc)
                return
            if self.calls.draining:
                await _refuse(stream, StreamRejected("draining", "try again later", code=TRY_AGAIN_LATER))
                return
            await self._run_call(stream, start)

    async def _run_call(self, stream: TwilioWebSocket, start: StartInfo) -> None:
        # Created inside the call's log context, so the engine and every task it starts carry the CallSid.
        task: asyncio.Task[object] = asyncio.create_task(
            self._run_engine(stream, start), name=f"call-engine:{start.call_sid}"
        )
        call = RunningCall(start.call_sid, task)
        self.calls.add(call)
        logger.info("media stream started", extra={"stream_sid": start.stream_sid, "running_calls": len(self.calls)})
        try:
            ended = await self._supervise(call, stream)
            code, reason = _closing(ended)
            await stream.close(code, reason)
            logger.info("media stream ended", extra={"ended": ended, "close_code": code})
        finally:
            self.calls.remove(call)

    async def _run_engine(self, stream: TwilioWebSocket, start: StartInfo) -> object:
        # Built inside the task, so a factory that fails ends this call like an engine that fails.
        engine = self.services.engine_factory()
        return await engine.run(stream, start)

    async def _supervise(self, call: RunningCall, stream: TwilioWebSocket) -> str:
        """Wait for the engine to stop, cancelling it if the socket is gone and it does not. Returns how it ended."""
        task = call.engine
        socket_gone = asyncio.ensure_future(stream.wait_closed())
        try:
            await asyncio.wait({task, socket_gone}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=self.services.engine_stop_grace_seconds)
            if not task.done():
                logger.warning("the call engine did not stop after its stream closed: cancelling it")
                task.cancel()
                await asyncio.wait({task})
        finally:
            socket_gone.cancel()
            if not task.done():
                # This connection's task is being cancelled (server shutdown): the engine must not outlive it.
                task.cancel()
                await asyncio.wait({task})
        if call.handed_over:
            return "handed_over"
        if task.cancelled():
            return "stream_lost"
        if (error := task.exception()) is not None:
            logger.error("the call engine failed", exc_info=error)
            count("Errors", kind="engine")
            return "engine_failed"
        return "engine_returned"


def _closing(ended: str) -> tuple[int, str]:
    if ended == "handed_over":
        # Not 1000, and the conversation is not marked ended: /twilio/stream-ended resumes the call.
        return GOING_AWAY, "server shutting down"
    if ended == "engine_failed":
        return INTERNAL_ERROR, "internal error"
    return NORMAL_CLOSURE, ""


async def _refuse(stream: TwilioWebSocket, rejection: StreamRejected) -> None:
    extra = {"reason": rejection.reason, "detail": rejection.detail}
    if rejection.code == POLICY_VIOLATION:
        logger.warning("refused a media stream", extra=extra)
    elif rejection.code == INTERNAL_ERROR:
        logger.error("refused a media stream", extra=extra)
    else:
        logger.info("refused a media stream", extra=extra)
    count("RejectedStream", reason=rejection.reason)
    await stream.close(rejection.code, rejection.close_reason)


def _is_call_sid(value: str) -> bool:
    try:
        valid_call_sid(value)
    except ValidationError:
        return False
    return True


def create_app(services: Services) -> MediaServerApp:
    return MediaServerApp(services)
