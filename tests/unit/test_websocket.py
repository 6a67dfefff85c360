"""TwilioWebSocket and FrameProblems on a real Starlette WebSocket fed by in-memory ASGI messages."""

import asyncio
import base64
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import Message
from starlette.websockets import WebSocket

from streaming.protocol import Dtmf, Mark, Media
from streaming.stream import StreamClosed
from streaming.websocket import FrameProblems, ProtocolViolation, TwilioWebSocket
from switchboard.observability import logger

STREAM_SID = "MZ" + "a" * 32
CALL_SID = "CA" + "1" * 32


class Peer:
    """The ASGI server side of one WebSocket: what the app will receive, and what it sent."""

    def __init__(self, *frames: str | bytes) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        self.gone = False
        self.inbox.put_nowait({"type": "websocket.connect"})
        for frame in frames:
            self.push(frame)

    def push(self, frame: str | bytes) -> None:
        key = "text" if isinstance(frame, str) else "bytes"
        self.inbox.put_nowait({"type": "websocket.receive", key: frame})

    def disconnect(self, code: int = 1006) -> None:
        self.gone = True
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": code})

    async def receive(self) -> Message:
        return await self.inbox.get()

    async def send(self, message: Message) -> None:
        if self.gone and message["type"] == "websocket.send":
            raise OSError("the peer is gone")  # what uvicorn raises (ClientDisconnected is an OSError)
        # Yield, as a real send may: lets concurrent senders interleave if nothing orders them.
        await asyncio.sleep(0)
        self.sent.append(message)

    @property
    def texts(self) -> list[dict[str, Any]]:
        return [json.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]


async def stream_on(peer: Peer) -> TwilioWebSocket:
    websocket = WebSocket({"type": "websocket", "path": "/media", "headers": []}, peer.receive, peer.send)
    await websocket.accept()
    return TwilioWebSocket(websocket)


def start(stream_sid: str = STREAM_SID, **media_format: Any) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "streamSid": stream_sid,
                "callSid": CALL_SID,
                "customParameters": {"token": "t"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1} | media_format,
            },
        }
    )


def media(chunk: int, stream_sid: str = STREAM_SID, payload: str | None = None) -> str:
    encoded = payload if payload is not None else base64.b64encode(bytes([chunk]) * 160).decode()
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(chunk + 1),
            "streamSid": stream_sid,
            "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(20 * chunk), "payload": encoded},
        }
    )


CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
MARK = json.dumps({"event": "mark", "sequenceNumber": "7", "streamSid": STREAM_SID, "mark": {"name": "t1:first"}})
DTMF = json.dumps(
    {"event": "dtmf", "sequenceNumber": "8", "streamSid": STREAM_SID, "dtmf": {"track": "inbound_track", "digit": "#"}}
)
STOP = json.dumps({"event": "stop", "sequenceNumber": "9", "streamSid": STREAM_SID, "stop": {"callSid": CALL_SID}})


# -- before the start ----------------------------------------------------------------------------------------


async def test_start_after_connected_and_garbage() -> None:
    stream = await stream_on(Peer(CONNECTED, "garbage", b"\x00", CONNECTED, start()))
    info = await stream.wait_for_start()
    assert (info.call_sid, info.stream_sid, info.custom_parameters) == (CALL_SID, STREAM_SID, {"token": "t"})
    assert stream.stream_sid == STREAM_SID
    assert stream.problems.counts == {"not_json": 1, "binary": 1}


@pytest.mark.parametrize("first", [media(1), MARK, DTMF, STOP])
async def test_anything_but_connected_before_start_is_a_violation(first: str) -> None:
    stream = await stream_on(Peer(CONNECTED, first, start()))
    with pytest.raises(ProtocolViolation) as raised:
        await stream.wait_for_start()
    assert raised.value.kind == "before_start"
    assert stream.stream_sid == ""


@pytest.mark.parametrize(
    "bad_start",
    [
        json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID, "start": {}}),
        start(encoding="audio/l16"),
        start(sampleRate=16000),
        json.dumps(json.loads(start()) | {"streamSid": "MZ" + "b" * 32}),
    ],
    ids=["missing-fields", "not-mulaw", "not-8khz", "two-stream-sids"],
)
async def test_a_start_we_cannot_carry_is_a_violation(bad_start: str) -> None:
    stream = await stream_on(Peer(bad_start))
    with pytest.raises(ProtocolViolation) as raised:
        await stream.wait_for_start()
    assert raised.value.kind == "bad_start"


async def test_a_disconnect_before_start_is_stream_closed() -> None:
    peer = Peer(CONNECTED)
    peer.disconnect(1000)
    stream = await stream_on(peer)
    with pytest.raises(StreamClosed):
        await stream.wait_for_start()
    assert stream.closed


async def test_receive_before_start_is_a_programming_error() -> None:
    stream = await stream_on(Peer(media(1)))
    with pytest.raises(RuntimeError, match="wait_for_start"):
        await stream.receive()


# -- after the start ---------------------------------------------------------------------------------------


async def test_receive_returns_what_the_engine_needs_and_counts_the_rest() -> None:
    peer = Peer(
        start(),
        media(1),
        "{not json",
        "42",
        json.dumps({"event": "hangup"}),
        media(2, payload="!!!"),
        json.dumps({"event": "media", "sequenceNumber": "4", "streamSid": STREAM_SID, "media": {}}),
        b"\x01\x02",
        start(),
        CONNECTED,
        media(3, stream_sid="MZ" + "f" * 32),
        MARK,
        DTMF,
        media(4),
        STOP,
    )
    stream = await stream_on(peer)
    await stream.wait_for_start()

    received = [await stream.receive() for _ in range(5)]

    assert [type(m).__name__ for m in received] == ["Media", "Mark", "Dtmf", "Media", "Stop"]
    first, mark, dtmf, fourth, _ = received
    assert isinstance(first, Media)
    assert isinstance(fourth, Media)
    assert (first.media.chunk, first.media.payload) == (1, b"\x01" * 160)
    assert fourth.media.chunk == 4
    assert isinstance(mark, Mark)
    assert mark.mark.name == "t1:first"
    assert isinstance(dtmf, Dtmf)
    assert dtmf.dtmf.digit == "#"
    assert stream.problems.counts == {
        "not_json": 1,
        "not_an_object": 1,
        "unknown_event": 1,
        "bad_media": 2,
        "binary": 1,
        "repeated_start": 1,
        "late_connected": 1,
        "wrong_stream_sid": 1,
    }


async def test_a_disconnect_is_stream_closed_for_every_later_call() -> None:
    peer = Peer(start(), media(1))
    peer.disconnect()
    stream = await stream_on(peer)
    await stream.wait_for_start()
    await stream.receive()
    with pytest.raises(StreamClosed):
        await stream.receive()
    with pytest.raises(StreamClosed):
        await stream.receive()
    with pytest.raises(StreamClosed):
        await stream.send_media(b"\xff" * 160)
    assert stream.closed


async def test_a_failed_send_is_stream_closed() -> None:
    peer = Peer(start())
    stream = await stream_on(peer)
    await stream.wait_for_start()
    peer.gone = True
    with pytest.raises(StreamClosed):
        await stream.send_mark("t1:first")
    assert stream.closed
    with pytest.raises(StreamClosed):
        await stream.receive()


# -- sending -------------------------------------------------------------------------------------------------


async def test_sends_are_twilio_messages_for_this_stream() -> None:
    peer = Peer(start())
    stream = await stream_on(peer)
    await stream.wait_for_start()
    await stream.send_media(b"\x7f" * 400)
    await stream.send_mark("t1:first")
    await stream.send_clear()
    assert peer.texts == [
        {"event": "media", "streamSid": STREAM_SID, "media": {"payload": base64.b64encode(b"\x7f" * 400).decode()}},
        {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "t1:first"}},
        {"event": "clear", "streamSid": STREAM_SID},
    ]


async def test_concurrent_sends_go_out_one_at_a_time_in_order() -> None:
    peer = Peer(start())
    stream = await stream_on(peer)
    await stream.wait_for_start()
    await asyncio.gather(*(stream.send_mark(f"m{n}") for n in range(50)))
    assert [m["mark"]["name"] for m in peer.texts] == [f"m{n}" for n in range(50)]


async def test_close_is_idempotent_and_ends_receiving() -> None:
    peer = Peer(start())
    stream = await stream_on(peer)
    await stream.wait_for_start()
    await stream.close(1001, "server shutting down")
    await stream.close()
    await stream.close(1011)
    closes = [m for m in peer.sent if m["type"] == "websocket.close"]
    assert closes == [{"type": "websocket.close", "code": 1001, "reason": "server shutting down"}]
    with pytest.raises(StreamClosed):
        await stream.receive()
    with pytest.raises(StreamClosed):
        await stream.send_clear()


async def test_close_after_the_peer_left_does_not_raise() -> None:
    peer = Peer(start())
    stream = await stream_on(peer)
    await stream.wait_for_start()
    peer.disconnect()
    with pytest.raises(StreamClosed):
        await stream.receive()
    await stream.close()


# -- FrameProblems ---------------------------------------------------------------------------------------------


@pytest.fixture
def warnings_logged() -> Iterator[io.StringIO]:
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


def test_problems_are_logged_at_most_once_per_interval(warnings_logged: io.StringIO) -> None:
    now = [0.0]
    problems = FrameProblems(log_interval_s=10.0, clock=lambda: now[0])
    for at in [0.0, 1.0, 2.0, 9.9, 10.0, 10.5, 25.0]:
        now[0] = at
        problems.record("not_json", "detail")
    lines = [json.loads(line) for line in warnings_logged.getvalue().splitlines()]
    assert [line["not_logged_since_last"] for line in lines] == [0, 3, 1]
    assert {line["level"] for line in lines} == {"WARNING"}
    assert problems.counts == {"not_json": 7}


def test_flush_emits_one_metric_per_kind(capsys: pytest.CaptureFixture[str]) -> None:
    problems = FrameProblems()
    for kind in ["binary", "not_json", "binary"]:
        problems.record(kind)
    capsys.readouterr()
    problems.flush()
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert sorted((d["kind"], d["MalformedFrame"]) for d in documents) == [("binary", [2.0]), ("not_json", [1.0])]
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Switchboard" for d in documents)
    assert problems.counts == {}
