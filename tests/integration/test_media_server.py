"""The media server end to end: real uvicorn on a free port, a websockets client playing Twilio, real Redis.

The engine is a double (it echoes audio, answers a digit with a mark and records how it ended), so these
tests are about the shell: who gets in, what reaches the engine, how a call leaves the server.
"""

import asyncio
import base64
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streaming.protocol import Dtmf, Mark, Media, StartInfo, Stop
from streaming.server import MEDIA_PATH, Engine, MediaServerApp, Services, create_app
from streaming.serving import MediaServer, uvicorn_config
from streaming.stream import MediaStream, StreamClosed
from streaming.stream_auth import token_claim_key
from switchboard.stream_token import StreamTokenSigner
from switchboard.twilio_signature import TwilioSignature
from tests.support.net import free_port

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_STREAM_URL = "wss://media.example.com/media"
PUBLIC_API_URL = "https://api.example.com"
TOKEN_KEY = b"stream-token-key-for-the-tests-0123456789"
CALL_SID = "CA" + "1" * 32
OTHER_CALL_SID = "CA" + "2" * 32
STREAM_SID = "MZ" + "a" * 32
FRAME = bytes(range(160))


# -- the engine double ------------------------------------------------------------------------------------


@dataclass
class EngineLog:
    starts: list[StartInfo] = field(default_factory=list)
    received: list[Media | Dtmf | Mark | Stop] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)


class EchoEngine:
    """Sends every media payload straight back, answers a digit with a mark, returns on stop.

    `stuck_after_close` makes it ignore StreamClosed and wait forever, like an engine stuck on a provider.
    """

    def __init__(self, log: EngineLog, *, stuck_after_close: bool = False) -> None:
        self._log = log
        self._stuck_after_close = stuck_after_close

    async def run(self, stream: MediaStream, start: StartInfo) -> object:
        self._log.starts.append(start)
        try:
            while True:
                try:
                    message = await stream.receive()
                except StreamClosed:
                    self._log.ended.append("stream_closed")
                    if self._stuck_after_close:
                        await asyncio.Event().wait()
                    return "closed"
                self._log.received.append(message)
                if isinstance(message, Media):
                    await stream.send_media(message.media.payload)
                elif isinstance(message, Dtmf):
                    await stream.send_mark(f"dtmf:{message.dtmf.digit}")
                elif isinstance(message, Stop):
                    self._log.ended.append("stop")
                    return "stopped"
        except asyncio.CancelledError:
            self._log.ended.append("cancelled")
            raise


# -- Twilio's side ------------------------------------------------------------------------------------------


def signature(url: str = PUBLIC_STREAM_URL, auth_token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(auth_token).compute_signature(url, {}))


def connected_message() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(token: str, *, call_sid: str = CALL_SID, stream_sid: str = STREAM_SID) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": {"token": token, "agent_id": "clinic-receptionist"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def media_message(chunk: int, payload: bytes = FRAME, *, stream_sid: str = STREAM_SID) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(chunk + 1),
            "streamSid": stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(20 * (chunk - 1)),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
        }
    )


def dtmf_message(digit: str) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": "90",
            "streamSid": STREAM_SID,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def stop_message() -> str:
    return json.dumps({"event": "stop", "sequenceNumber": "99", "streamSid": STREAM_SID, "stop": {"callSid": CALL_SID}})


@dataclass
class Closed:
    code: int | None
    reason: str | None
    messages: list[Any]


async def until_closed(ws: ClientConnection) -> Closed:
    """Everything the server sends until it closes the socket, and how it closed it."""
    messages: list[Any] = []
    while True:
        try:
            raw = await ws.recv()
        except ConnectionClosed:
            return Closed(ws.close_code, ws.close_reason, messages)
        messages.append(json.loads(raw))


async def next_message(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(await ws.recv())
    assert isinstance(message, dict)
    return message


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until `condition` holds (the test's timeout bounds the wait; nothing here measures time)."""
    while not condition():  # noqa: ASYNC110 - plain state of the server, with no event to wait on
        await asyncio.sleep(0.01)


# -- the server ---------------------------------------------------------------------------------------------


@dataclass
class Running:
    app: MediaServerApp
    server: MediaServer
    task: "asyncio.Task[None]"
    base: str

    @property
    def media_url(self) -> str:
        return f"ws://{self.base}{MEDIA_PATH}"

    async def health(self) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://{self.base}/healthz")

    def twilio(self, *, sign: str | None = None) -> Any:
        headers = {"X-Twilio-Signature": sign if sign is not None else signature()}
        return connect(self.media_url, additional_headers=headers, proxy=None, compression=None)


@asynccontextmanager
async def media_server(services: Services) -> AsyncIterator[Running]:
    app = create_app(services)
    port = free_port()
    server = MediaServer(uvicorn_config(app, port=port, host="127.0.0.1"), app)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            pytest.fail("the media server stopped during its start")
        await asyncio.sleep(0.01)
    try:
        yield Running(app, server, task, f"127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def signer() -> StreamTokenSigner:
    return StreamTokenSigner(TOKEN_KEY, ttl_seconds=120)


@pytest.fixture
def engine_log() -> EngineLog:
    return EngineLog()


@pytest.fixture
def services(redis_client: aioredis.Redis, signer: StreamTokenSigner, engine_log: EngineLog) -> Services:
    def engine() -> Engine:
        return EchoEngine(engine_log)

    return Services(
        signature=TwilioSignature(AUTH_TOKEN, public_stream_url=PUBLIC_STREAM_URL),
        tokens=signer,
        redis=redis_client,
        engine_factory=engine,
        drain_seconds=600,
        start_timeout_seconds=10.0,
        engine_stop_grace_seconds=0.2,
    )


@pytest.fixture
async def running(services: Services) -> AsyncIterator[Running]:
    async with media_server(services) as server:
        yield server


def emitted_metrics(capsys: pytest.CaptureFixture[str]) -> list[tuple[str, dict[str, str], float]]:
    """The EMF documents printed so far, as (metric, dimensions, value)."""
    found = []
    for line in capsys.readouterr().out.splitlines():
        if '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            dimensions = {name: document[name] for names in directive["Dimensions"] for name in names}
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                found.append((metric["Name"], dimensions, float(value[0] if isinstance(value, list) else value)))
    return found


def rejections(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [dims["reason"] for name, dims, _ in emitted_metrics(capsys) if name == "RejectedStream"]


# -- a call that gets in ------------------------------------------------------------------------------------


async def test_valid_stream_reaches_the_engine_and_audio_flows_both_ways(
    running: Running, signer: StreamTokenSigner, engine_log: EngineLog
) -> None:
    async with running.twilio() as ws:
        await ws.send(connected_message())
        await ws.send(start_message(signer.issue(CALL_SID)))
        frames = [bytes([n]) * 160 for n in range(5)]
        for chunk, frame in enumerate(frames, start=1):
            await ws.send(media_message(chunk, frame))
        echoed = [await next_message(ws) for _ in frames]
        await ws.send(dtmf_message("5"))
        mark = await next_message(ws)
        await ws.send(stop_message())
        closed = await until_closed(ws)

    assert [m["event"] for m in echoed] == ["media"] * 5
    assert {m["streamSid"] for m in echoed} == {STREAM_SID}
    assert [base64.b64decode(m["media"]["payload"]) for m in echoed] == frames
    assert mark == {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "dtmf:5"}}
    assert closed.code == 1000
    (start,) = engine_log.starts
    assert start.call_sid == CALL_SID
    assert start.custom_parameters["agent_id"] == "clinic-receptionist"
    assert [m.media.chunk for m in engine_log.received if isinstance(m, Media)] == [1, 2, 3, 4, 5]
    assert engine_log.ended == ["stop"]


async def test_the_token_is_claimed_until_it_expires(
    running: Running, signer: StreamTokenSigner, redis_client: aioredis.Redis
) -> None:
    token = signer.issue(CALL_SID)
    claims = signer.verify(token, CALL_SID)
    async with running.twilio() as ws:
        await ws.send(start_message(token))
        await ws.send(stop_message())
        assert (await until_closed(ws)).code == 1000
    assert await redis_client.get(token_claim_key(claims.token_id)) == CALL_SID.encode()
    expires_at = await redis_client.expiretime(token_claim_key(claims.token_id))
    assert expires_at == int(claims.expires_at.timestamp())


async def test_healthz_counts_running_calls(running: Running, signer: StreamTokenSigner) -> None:
    idle = await running.health()
    assert (idle.status_code, idle.json()) == (200, {"status": "ok", "calls": 0})
    async with running.twilio() as ws:
        await ws.send(start_message(signer.issue(CALL_SID)))
        await ws.send(media_message(1))
        await next_message(ws)  # the engine is running once it echoes
        busy = await running.health()
        await ws.send(stop_message())
        await until_closed(ws)
    assert (busy.status_code, busy.json()) == (200, {"status": "ok", "calls": 1})
    await eventually(lambda: len(running.app.calls) == 0)


# -- refused before any audio ---------------------------------------------------------------------------------


async def _refused(running: Running, *, sign: str | None = None, messages: list[str]) -> Closed:
    async with running.twilio(sign=sign) as ws:
        for message in messages:
            try:
                await ws.send(message)
            except ConnectionClosed:
                break
        return await until_closed(ws)


@pytest.mark.parametrize(
    "sign",
    [
        pytest.param("", id="missing"),
        pytest.param(signature(auth_token="another-account-token"), id="wrong-key"),
        pytest.param(signature(url="wss://evil.example.com/media"), id="other-url"),
        pytest.param("bm90IGEgc2lnbmF0dXJl", id="garbage"),
    ],
)
async def test_an_unsigned_or_forged_upgrade_is_refused_before_any_audio(
    running: Running,
    signer: StreamTokenSigner,
    engine_log: EngineLog,
    capsys: pytest.CaptureFixture[str],
    sign: str,
) -> None:
    closed = await _refused(
        running, sign=sign, messages=[start_message(signer.issue(CALL_SID)), media_message(1), media_message(2)]
    )
    assert (closed.code, closed.reason) == (1008, "invalid signature")
    assert closed.messages == []
    assert engine_log.starts == []
    assert rejections(capsys) == ["signature"]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param(lambda s: "", "token_invalid", id="missing"),
        pytest.param(lambda s: "not-a-token", "token_invalid", id="garbage"),
        pytest.param(
            lambda s: StreamTokenSigner(b"x" * 32).issue(CALL_SID), "token_invalid", id="signed-with-another-key"
        ),
        pytest.param(lambda s: s.issue(OTHER_CALL_SID), "token_invalid", id="other-call"),
        pytest.param(
            lambda s: s.issue(CALL_SID, now=datetime.now(UTC) - timedelta(minutes=10)), "token_expired", id="expired"
        ),
    ],
)
async def test_a_bad_token_is_refused_before_any_audio(
    running: Running,
    signer: StreamTokenSigner,
    engine_log: EngineLog,
    capsys: pytest.CaptureFixture[str],
    token: Callable[[StreamTokenSigner], str],
    reason: str,
) -> None:
    closed = await _refused(running, messages=[connected_message(), start_message(token(signer)), media_message(1)])
    assert (closed.code, closed.reason) == (1008, "invalid token")
    assert closed.messages == []
    assert engine_log.starts == []
    assert rejections(capsys) == [reason]


async def test_a_replayed_token_is_refused(
    running: Running, signer: StreamTokenSigner, engine_log: EngineLog, capsys: pytest.CaptureFixture[str]
) -> None:
    token = signer.issue(CALL_SID)
    async with running.twilio() as ws:
        await ws.send(start_message(token))
        await ws.send(stop_message())
        assert (await until_closed(ws)).code == 1000

    replay = await _refused(running, messages=[start_message(token), media_message(1)])

    assert (replay.code, replay.reason) == (1008, "token already used")
    assert replay.messages == []
    assert len(engine_log.starts) == 1
    assert rejections(capsys) == ["token_replayed"]


async def test_media_before_start_is_refused(
    running: Running, signer: StreamTokenSigner, engine_log: EngineLog, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = await _refused(
        running, messages=[connected_message(), media_message(1), start_message(signer.issue(CALL_SID))]
    )
    assert closed.code == 1008
    assert closed.messages == []
    assert engine_log.starts == []
    assert rejections(capsys) == ["before_start"]


async def test_a_start_that_does_not_parse_is_refused(
    running: Running, engine_log: EngineLog, capsys: pytest.CaptureFixture[str]
) -> None:
    start = json.loads(start_message("token"))
    del start["start"]["callSid"]
    closed = await _refused(running, messages=[json.dumps(start)])
    assert closed.code == 1008
    assert engine_log.starts == []
    assert rejections(capsys) == ["bad_start"]


async def test_no_start_in_time_is_refused(
    services: Services, engine_log: EngineLog, capsys: pytest.CaptureFixture[str]
) -> None:
    async with media_server(replace(services, start_timeout_seconds=0.3)) as running, running.twilio() as ws:
        await ws.send(connected_message())
        closed = await until_closed(ws)
    assert (closed.code, closed.reason) == (1008, "no start message")
    assert engine_log.starts == []
    assert rejections(capsys) == ["no_start"]


# -- inside a call: what is skipped, what ends it -------------------------------------------------------------


async def test_malformed_frames_are_counted_and_the_call_goes_on(
    running: Running, signer: StreamTokenSigner, engine_log: EngineLog, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_base64 = json.loads(media_message(2))
    bad_base64["media"]["payload"] = "***not base64***"
    missing_fields = json.loads(media_message(3))
    del missing_fields["media"]["chunk"]
    async with running.twilio() as ws:
        await ws.send(start_message(signer.issue(CALL_SID)))
        await ws.send(media_message(1, b"\x01" * 160))
        first = await next_message(ws)
        for frame in [
            "this is not JSON",
            "[1, 2, 3]",
            json.dumps({"event": "hangup", "streamSid": STREAM_SID}),
            json.dumps(bad_base64),
            json.dumps(missing_fields),
            start_message(signer.issue(CALL_SID)),
            connected_message(),
        ]:
            await ws.send(frame)
        await ws.send(b"\x00\x01 binary")
        await ws.send(media_message(4, b"\x04" * 160))
        after = await next_message(ws)
        await ws.send(stop_message())
        closed = await until_closed(ws)

    assert base64.b64decode(first["media"]["payload"]) == b"\x01" * 160
    assert base64.b64decode(after["media"]["payload"]) == b"\x04" * 160
    assert closed.code == 1000
    assert [type(m).__name__ for m in engine_log.received] == ["Media", "Media", "Stop"]
    counted = {dims["kind"]: value for name, dims, value in emitted_metrics(capsys) if name == "MalformedFrame"}
    assert counted == {
        "not_json": 1,
        "not_an_object": 1,
        "unknown_event": 1,
        "bad_media": 2,
        "repeated_start": 1,
        "late_connected": 1,
        "binary": 1,
    }


async def test_a_message_for_another_stream_is_ignored_and_counted(
    running: Running, signer: StreamTokenSigner, engine_log: EngineLog, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running.twilio() as ws:
        await ws.send(start_message(signer.issue(CALL_SID)))
        await ws.send(media_message(1, b"\x09" * 160, stream_sid="MZ" + "f" * 32))
        await ws.send(media_message(2, b"\x02" * 160))
        echoed = await next_message(ws)
        await ws.send(stop_message())
        await until_closed(ws)

    assert base64.b64decode(echoed["media"]["payload"]) == b"\x02" * 160
    assert [m.media.chunk for m in engine_log.received if isinstance(m, Media)] == [2]
    counted = {dims["kind"]: value for name, dims, value in emitted_metrics(capsys) if name == "MalformedFrame"}
    assert counted == {"wrong_stream_sid": 1}


async def test_a_client_disconnect_ends_the_engine(
    running: Running, signer: StreamTokenSigner, engine_log: EngineLog
) -> None:
    async with running.twilio() as ws:
        await ws.send(start_message(signer.issue(CALL_SID)))
        await ws.send(media_message(1))
        await next_message(ws)
    await eventually(lambda: len(running.app.calls) == 0)
    # Told by StreamClosed, it stopped by itself: nothing had to be cancelled.
    assert engine_log.ended == ["stream_closed"]


async def test_a_client_disconnect_cancels_an_engine_that_does_not_stop(
    services: Services, signer: StreamTokenSigner, engine_log: EngineLog
) -> None:
    stuck = replace(services, engine_factory=lambda: EchoEngine(engine_log, stuck_after_close=True))
    async with media_server(stuck) as running:
        async with running.twilio() as ws:
            await ws.send(start_message(signer.issue(CALL_SID)))
            await ws.send(media_message(1))
            await next_message(ws)
        await eventually(lambda: len(running.app.calls) == 0)
    assert engine_log.ended == ["stream_closed", "cancelled"]


async def test_a_failing_engine_closes_the_stream_with_an_internal_error(
    services: Services, signer: StreamTokenSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    class FailingEngine:
        async def run(self, stream: MediaStream, start: StartInfo) -> object:
            await stream.receive()
            raise RuntimeError("a bug in the engine")

    async with media_server(replace(services, engine_factory=FailingEngine)) as running, running.twilio() as ws:
        await ws.send(start_message(signer.issue(CALL_SID)))
        await ws.send(media_message(1))
        closed = await until_closed(ws)
    assert (closed.code, closed.reason) == (1011, "internal error")
    assert ("Errors", {"service": "switchboard", "kind": "engine"}, 1.0) in emitted_metrics(capsys)


# -- shutdown ---------------------------------------------------------------------------------------------


async def _send_frames_until_closed(ws: ClientConnection, first_chunk: int) -> None:
    chunk = first_chunk
    try:
        while True:
            await ws.send(media_message(chunk))
            chunk += 1
            await asyncio.sleep(0.02)
    except ConnectionClosed:
        return


async def test_sigterm_drains_then_hands_running_calls_over(
    services: Services, signer: StreamTokenSigner, engine_log: EngineLog, capsys: pytest.CaptureFixture[str]
) -> None:
    async with media_server(replace(services, drain_seconds=3.0)) as running:
        async with running.twilio() as ws:
            await ws.send(start_message(signer.issue(CALL_SID)))
            await ws.send(media_message(1))
            await next_message(ws)

            os.kill(os.getpid(), signal.SIGTERM)
            await eventually(lambda: running.app.calls.draining)

            health = await running.health()
            refused = await _refused(running, messages=[start_message(signer.issue(OTHER_CALL_SID))])
            # The running call carries on while the service drains.
            await ws.send(media_message(2, b"\x02" * 160))
            still_echoed = await next_message(ws)

            feeding = asyncio.create_task(_send_frames_until_closed(ws, 3))
            closed = await until_closed(ws)
            await feeding
        # The drain over, the server stops by itself.
        await running.task

    assert (health.status_code, health.json()) == (503, {"status": "draining", "calls": 1})
    assert (refused.code, refused.reason) == (1013, "try again later")
    assert base64.b64decode(still_echoed["media"]["payload"]) == b"\x02" * 160
    assert (closed.code, closed.reason) == (1001, "server shutting down")
    assert [start.call_sid for start in engine_log.starts] == [CALL_SID]
    assert engine_log.ended == ["cancelled"]
    assert rejections(capsys) == ["draining"]


async def test_a_second_signal_hands_over_at_once(
    services: Services, signer: StreamTokenSigner, engine_log: EngineLog
) -> None:
    async with media_server(replace(services, drain_seconds=600)) as running:
        async with running.twilio() as ws:
            await ws.send(start_message(signer.issue(CALL_SID)))
            await ws.send(media_message(1))
            await next_message(ws)
            running.server.begin_shutdown()
            await eventually(lambda: running.app.calls.draining)
            running.server.begin_shutdown()
            closed = await until_closed(ws)
        await running.task
    assert closed.code == 1001
    assert engine_log.ended == ["cancelled"]


async def test_a_drain_with_no_calls_left_stops_the_server_at_once(services: Services) -> None:
    async with media_server(replace(services, drain_seconds=600)) as running:
        await running.app.drain()
        assert (await running.health()).status_code == 503


async def test_the_server_does_not_start_without_redis(services: Services) -> None:
    unreachable = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(replace(services, redis=unreachable))
    server = MediaServer(uvicorn_config(app, port=free_port(), host="127.0.0.1"), app)
    with pytest.raises(SystemExit):
        await server.serve()
    assert not server.started
    await unreachable.aclose()


# -- the autoscaling signal -----------------------------------------------------------------------------------


async def test_active_calls_are_reported_while_the_server_runs(
    services: Services, signer: StreamTokenSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[float] = []

    async def until_reported(value: float) -> None:
        while value not in seen:
            metrics = emitted_metrics(capsys)
            seen.extend(v for name, dims, v in metrics if name == "ActiveCalls" and dims == {"service": "switchboard"})
            await asyncio.sleep(0.02)

    async with media_server(replace(services, active_calls_interval_seconds=0.05)) as running:
        async with asyncio.timeout(10):
            await until_reported(0.0)  # an idle task reports too: scale-in needs it
            async with running.twilio() as ws:
                await ws.send(connected_message())
                await ws.send(start_message(signer.issue(CALL_SID)))
                await until_reported(1.0)
                await ws.send(stop_message())
                await until_closed(ws)
