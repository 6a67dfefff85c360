"""The Twilio call simulator against a tiny media server of our own, on real uvicorn.

The server validates the upgrade's signature with switchboard.twilio_signature, records everything the
simulator sends, and plays canned audio with a mark after each chunk: a greeting when the stream starts
and a reply a fixed number of quiet frames after the caller stops speaking (an endpointer counting
frames, so its timing is in audio time). Optionally it sends `clear` when the caller starts speaking
over it, or closes the socket after its reply.
"""

import asyncio
import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from websockets.exceptions import InvalidStatus

from streaming.audio import synth
from streaming.audio.codec import array_to_ulaw, ulaw_to_pcm16
from streaming.protocol import clear_message, mark_message, media_message
from streaming.providers.base import SpeechSession, Transcript
from streaming.providers.simulated import LatencyProfile, SimulatedProviders, frame_is_loud
from streaming.simulator import SOUND_RUNS_PARAMETER, CallReport, Scenario, run_call
from switchboard.agent import load_agent
from switchboard.twilio_signature import InvalidSignature, TwilioSignature
from tests.support.net import free_port

AUTH_TOKEN = "12345678901234567890123456789012"
PUBLIC_STREAM_URL = "wss://media.example.com/media"
CALL_SID = "CA" + "ab" * 16
AGENT = load_agent(Path(__file__).resolve().parents[2] / "agents" / "clinic-receptionist.yaml")


@dataclass
class StreamSeen:
    """One WebSocket as the server saw it."""

    start: dict[str, Any]
    raw_start: dict[str, Any]
    first_media: dict[str, Any] | None = None
    frames: int = 0
    dtmf: list[dict[str, Any]] = field(default_factory=list)
    sequence_numbers: list[str] = field(default_factory=list)
    marks_sent: list[str] = field(default_factory=list)
    marks_echoed: list[str] = field(default_factory=list)
    frames_at_echo: dict[str, int] = field(default_factory=dict)
    frames_at_send: dict[str, int] = field(default_factory=dict)
    loud_frames: list[int] = field(default_factory=list)
    transcripts: list[Transcript] = field(default_factory=list)
    clears: int = 0
    ended_with: str = ""


@dataclass
class Behaviour:
    greeting_ms: int = 0
    reply_ms: int = 0
    chunk_ms: int = 100
    reply_after_quiet_frames: int = 10
    clear_on_speech: bool = False
    mark_before_audio: bool = False
    close_after_reply: bool = False


class CannedServer:
    def __init__(self, behaviour: Behaviour, providers: SimulatedProviders | None = None) -> None:
        self.behaviour = behaviour
        self.providers = providers
        self.streams: list[StreamSeen] = []
        self.rejected = 0
        self._signature = TwilioSignature(AUTH_TOKEN, public_stream_url=PUBLIC_STREAM_URL)
        self.app = FastAPI()
        self.app.add_api_websocket_route("/media", self._media)

    def _audio(self, ms: int, seed: int) -> bytes:
        return array_to_ulaw(synth.voiced(ms, f0=200.0, level_dbfs=-18.0, seed=seed))

    async def _play(self, ws: WebSocket, seen: StreamSeen, label: str, ms: int) -> None:
        sid = seen.start["streamSid"]
        audio = self._audio(ms, seed=len(seen.marks_sent))
        step = self.behaviour.chunk_ms * 8
        for number, offset in enumerate(range(0, len(audio), step), start=1):
            await ws.send_text(media_message(sid, audio[offset : offset + step]))
            name = f"{label}-{number}"
            seen.marks_sent.append(name)
            seen.frames_at_send[name] = seen.frames
            await ws.send_text(mark_message(sid, name))

    async def _media(self, ws: WebSocket) -> None:
        try:
            self._signature.validate_websocket(ws.headers.get("x-twilio-signature"))
        except InvalidSignature:
            self.rejected += 1
            await ws.close(code=1008)
            return
        await ws.accept()
        connected = json.loads(await ws.receive_text())
        assert connected["event"] == "connected"
        raw_start = json.loads(await ws.receive_text())
        seen = StreamSeen(start=raw_start["start"], raw_start=raw_start)
        self.streams.append(seen)
        behaviour = self.behaviour
        if behaviour.mark_before_audio:
            seen.marks_sent.append("before-audio")
            await ws.send_text(mark_message(seen.start["streamSid"], "before-audio"))
        if behaviour.greeting_ms:
            await self._play(ws, seen, "greeting", behaviour.greeting_ms)
        stt: SpeechSession | None = None
        listening: asyncio.Task[None] | None = None
        if self.providers is not None:
            stt = await self.providers.for_call(AGENT, seen.start["customParameters"]).stt.start(language="en-US")
            listening = asyncio.create_task(_collect(stt, seen.transcripts))
        try:
            await self._converse(ws, seen, stt)
        finally:
            if stt is not None and listening is not None:
                await stt.aclose()
                await listening

    async def _converse(self, ws: WebSocket, seen: StreamSeen, stt: SpeechSession | None) -> None:
        behaviour = self.behaviour
        speaking = False
        quiet = 0
        replies = 0
        try:
            while True:
                message = json.loads(await ws.receive_text())
                seen.sequence_numbers.append(message.get("sequenceNumber", ""))
                event = message["event"]
                if event == "media":
                    seen.frames += 1
                    if seen.first_media is None:
                        seen.first_media = message
                    pcm = ulaw_to_pcm16(_payload(message))
                    if stt is not None:
                        await stt.send_audio(pcm)
                    loud = frame_is_loud(pcm)
                    if loud:
                        seen.loud_frames.append(seen.frames)
                        quiet = 0
                        if not speaking:
                            speaking = True
                            outstanding = len(seen.marks_sent) > len(seen.marks_echoed)
                            if behaviour.clear_on_speech and outstanding:
                                seen.clears += 1
                                await ws.send_text(clear_message(seen.start["streamSid"]))
                    elif speaking:
                        quiet += 1
                        if quiet == behaviour.reply_after_quiet_frames:
                            speaking = False
                            if behaviour.reply_ms:
                                replies += 1
                                await self._play(ws, seen, f"reply{replies}", behaviour.reply_ms)
                                if behaviour.close_after_reply:
                                    await asyncio.sleep(0.05)
                                    await ws.close(code=1000)
                                    seen.ended_with = "server_closed"
                                    return
                elif event == "mark":
                    name = message["mark"]["name"]
                    seen.marks_echoed.append(name)
                    seen.frames_at_echo[name] = seen.frames
                elif event == "dtmf":
                    seen.dtmf.append(message)
                elif event == "stop":
                    seen.ended_with = "stop"
                    return
        except WebSocketDisconnect as exc:
            seen.ended_with = f"disconnect {exc.code}"


async def _collect(stt: SpeechSession, into: list[Transcript]) -> None:
    async for transcript in stt.transcripts():
        into.append(transcript)


def _payload(message: dict[str, Any]) -> bytes:
    return base64.b64decode(message["media"]["payload"])


@dataclass
class Running:
    server: CannedServer
    url: str


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[uvicorn.Server] = []
    threads: list[threading.Thread] = []

    def start(behaviour: Behaviour, providers: SimulatedProviders | None = None) -> Running:
        canned = CannedServer(behaviour, providers)
        port = free_port()
        config = uvicorn.Config(canned.app, host="127.0.0.1", port=port, ws="websockets-sansio", log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        started.append(server)
        threads.append(thread)
        return Running(canned, f"ws://127.0.0.1:{port}/media")

    yield start
    for server in started:
        server.should_exit = True
    for thread in threads:
        thread.join(timeout=10)


def _scenario(steps: Sequence[Mapping[str, object]], **fields: Any) -> Scenario:
    return Scenario.model_validate({"name": "test", "steps": steps, **fields})


async def _call(running: Running, scenario: Scenario, **options: Any) -> CallReport:
    return await run_call(
        running.url,
        public_stream_url=PUBLIC_STREAM_URL,
        auth_token=AUTH_TOKEN,
        call_sid=CALL_SID,
        parameters={"token": "first-token", "scenario": scenario.name},
        scenario=scenario,
        **options,
    )


QUIET_SECOND = [{"wait_silent": 1000, "after_previous_ms": 0}, {"hangup": True, "after_previous_ms": 0}]


async def test_signed_upgrade_and_twilio_start(serve: Any) -> None:
    running = serve(Behaviour())
    report = await _call(running, _scenario(QUIET_SECOND))

    [seen] = running.server.streams
    assert running.server.rejected == 0
    assert seen.raw_start["event"] == "start"
    assert seen.raw_start["sequenceNumber"] == "1"
    assert seen.start["callSid"] == CALL_SID
    assert seen.start["streamSid"].startswith("MZ")
    assert seen.start["streamSid"] == seen.raw_start["streamSid"]
    assert seen.start["accountSid"].startswith("AC")
    assert seen.start["tracks"] == ["inbound"]
    assert seen.start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert seen.start["customParameters"] == {"token": "first-token", "scenario": "test", SOUND_RUNS_PARAMETER: "0"}
    first = seen.first_media
    assert first is not None
    assert first["sequenceNumber"] == "2"
    assert first["media"] == {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": first["media"]["payload"]}
    assert len(_payload(first)) == 160
    # Every message numbered in order, as strings; the stream ends with `stop`.
    assert seen.sequence_numbers == [str(n) for n in range(2, 2 + len(seen.sequence_numbers))]
    assert seen.ended_with == "stop"
    assert report.ended_by == "caller"


async def test_forged_signature_is_refused(serve: Any) -> None:
    running = serve(Behaviour())
    with pytest.raises(InvalidStatus):
        await run_call(
            running.url,
            public_stream_url=PUBLIC_STREAM_URL,
            auth_token="not-the-account-token-000000000000",
            call_sid=CALL_SID,
            parameters={},
            scenario=_scenario(QUIET_SECOND),
        )
    assert running.server.rejected == 1
    assert running.server.streams == []


@pytest.mark.parametrize("speed", [1.0, 10.0])
async def test_one_frame_per_20_ms_of_call_time_on_any_clock(serve: Any, speed: float) -> None:
    running = serve(Behaviour())
    report = await _call(running, _scenario(QUIET_SECOND), speed=speed)

    [seen] = running.server.streams
    assert report.frames_sent == seen.frames == 1000 // 20
    assert report.duration_ms >= 1000


async def test_playout_echoes_marks_in_order_when_played(serve: Any) -> None:
    running = serve(Behaviour(greeting_ms=600, chunk_ms=200, mark_before_audio=True))
    steps: list[dict[str, object]] = [
        {"wait_silent": 1000, "after_reply_ms": 200},
        {"hangup": True, "after_previous_ms": 0},
    ]
    report = await _call(running, _scenario(steps), speed=4.0)

    [seen] = running.server.streams
    assert seen.marks_echoed == ["before-audio", "greeting-1", "greeting-2", "greeting-3"]
    # A mark with nothing queued comes back at once; the others as playout reaches them, on the frame grid.
    assert seen.frames_at_echo["before-audio"] == 0
    echoed_at = [seen.frames_at_echo[f"greeting-{n}"] for n in (1, 2, 3)]
    assert seen.frames_at_send["greeting-1"] == 0
    assert echoed_at[0] >= 200 // 20
    assert [b - a for a, b in itertools.pairwise(echoed_at)] == [200 // 20, 200 // 20]
    [greeting] = report.turns
    assert greeting.audio_ms == greeting.received_ms == 600
    assert greeting.ended_at_ms - greeting.started_at_ms == 600
    assert greeting.marks == ["greeting-1", "greeting-2", "greeting-3"]
    assert greeting.responds_to is None
    assert greeting.v2v_ms is None
    assert not greeting.interrupted
    assert report.marks_reordered == report.marks_lost == report.underruns == 0
    # The wait started once the greeting had played and 200 ms had passed.
    assert report.steps[0].started_at_ms is not None
    assert report.steps[0].started_at_ms >= greeting.ended_at_ms + 200


async def test_ear_latency_from_the_last_voiced_frame(serve: Any) -> None:
    quiet_frames = 12
    running = serve(Behaviour(greeting_ms=400, reply_ms=500, reply_after_quiet_frames=quiet_frames))
    steps: list[dict[str, object]] = [{"say": "Hello there.", "duration_ms": 600}]
    report = await _call(running, _scenario(steps, hangup_after_ms=300), speed=2.0)

    greeting, reply = report.turns
    say = report.steps[0]
    assert say.ended_at_ms is not None
    assert say.started_at_ms is not None
    assert say.ended_at_ms - say.started_at_ms == 600
    assert reply.responds_to == "speech"
    assert reply.v2v_ms == reply.started_at_ms - say.ended_at_ms
    # The server cannot answer before it has seen the quiet frames: causality, in call time.
    assert reply.v2v_ms >= quiet_frames * 20
    assert reply.audio_ms == 500
    assert reply.marks == [f"reply1-{n}" for n in range(1, 6)]
    assert say.replies_after == 1
    assert say.agent_audio_in_pauses_ms == 0
    assert greeting.v2v_ms is None


async def test_clear_echoes_pending_marks_and_measures_the_barge_in(serve: Any) -> None:
    running = serve(Behaviour(greeting_ms=3000, chunk_ms=200, clear_on_speech=True))
    steps: list[dict[str, object]] = [
        {"say": "Sorry, can I stop you there?", "during_reply_ms": 1000},
        {"hangup": True, "after_previous_ms": 500},
    ]
    report = await _call(running, _scenario(steps), speed=2.0)

    [seen] = running.server.streams
    assert seen.clears == 1
    # Every mark comes back exactly once, in the order sent: the played ones, then the flushed ones at once.
    assert seen.marks_echoed == seen.marks_sent
    greeting = report.turns[0]
    assert greeting.interrupted
    assert greeting.marks + greeting.flushed_marks == seen.marks_sent
    assert 3 <= len(greeting.marks) < len(seen.marks_sent)
    assert greeting.audio_ms < 3000
    flushed_at = {seen.frames_at_echo[name] for name in greeting.flushed_marks}
    assert len(flushed_at) == 1
    [barge_in] = report.barge_ins
    assert barge_in.by_clear
    assert barge_in.reply == 1
    assert barge_in.onset_ms == report.steps[0].started_at_ms
    assert barge_in.stop_latency_ms >= 0
    assert report.steps[0].agent_interrupted


async def test_drop_socket_then_resume_as_a_new_stream(serve: Any) -> None:
    running = serve(Behaviour())
    tokens = iter(["second-token"])

    async def resume() -> dict[str, str]:
        return {"token": next(tokens), "scenario": "test"}

    steps: list[dict[str, object]] = [
        {"say": "Hello.", "after_previous_ms": 0},
        {"drop_socket": {"resume_after_ms": 200}, "after_previous_ms": 100},
        {"say": "Are you there?", "after_previous_ms": 300},
        {"hangup": True, "after_previous_ms": 100},
    ]
    report = await _call(running, _scenario(steps), speed=2.0, resume_parameters=resume)

    first, second = running.server.streams
    # The server sees the socket go without a `stop` (an abnormal closure), then a new stream of the same call.
    assert first.ended_with in ("disconnect 1005", "disconnect 1006")  # no status / abnormal: no close frame
    assert second.ended_with == "stop"
    assert second.start["callSid"] == first.start["callSid"] == CALL_SID
    assert second.start["streamSid"] != first.start["streamSid"]
    assert second.start["customParameters"] == {"token": "second-token", "scenario": "test", SOUND_RUNS_PARAMETER: "1"}
    assert second.first_media is not None
    assert second.first_media["media"]["chunk"] == "1"
    assert second.raw_start["sequenceNumber"] == "1"
    assert report.streams == 2
    assert report.frames_sent == first.frames + second.frames
    # Both utterances reached the server, one on each stream.
    assert first.loud_frames
    assert second.loud_frames


async def test_dtmf_digits_in_order(serve: Any) -> None:
    running = serve(Behaviour())
    steps: list[dict[str, object]] = [
        {"dtmf": "12#", "after_previous_ms": 0},
        {"hangup": True, "after_previous_ms": 100},
    ]
    report = await _call(running, _scenario(steps), speed=2.0)

    [seen] = running.server.streams
    assert [m["dtmf"] for m in seen.dtmf] == [{"track": "inbound_track", "digit": d} for d in "12#"]
    assert report.dtmf_sent == 3
    assert report.steps[0].ended_at_ms is not None
    assert report.steps[0].started_at_ms is not None
    assert report.steps[0].ended_at_ms - report.steps[0].started_at_ms >= 2 * 150


async def test_speakerphone_echo_stays_under_the_energy_threshold(serve: Any) -> None:
    running = serve(Behaviour(greeting_ms=2000))
    steps: list[dict[str, object]] = [{"say": "Hi.", "after_reply_ms": 100}, {"hangup": True, "after_previous_ms": 300}]
    report = await _call(running, _scenario(steps), speed=2.0, echo_db=-30.0)

    [seen] = running.server.streams
    assert report.turns[0].audio_ms == 2000
    # The only loud frames are the caller's own word, sent after the greeting had played.
    say_frames = 15  # "Hi." is one syllable: 270 ms → 280 ms, 14 frames (and the one its onset straddles)
    assert 0 < len(seen.loud_frames) <= say_frames
    assert min(seen.loud_frames) > 2000 // 20


async def test_echo_must_stay_quiet() -> None:
    with pytest.raises(ValueError, match="echo_db"):
        await run_call(
            "ws://127.0.0.1:9/media",
            public_stream_url=PUBLIC_STREAM_URL,
            auth_token=AUTH_TOKEN,
            call_sid=CALL_SID,
            parameters={},
            scenario=_scenario(QUIET_SECOND),
            echo_db=-10.0,
        )


async def test_server_ending_the_call(serve: Any) -> None:
    running = serve(Behaviour(reply_ms=300, close_after_reply=True))
    steps: list[dict[str, object]] = [{"say": "Goodbye.", "after_previous_ms": 0}, {"wait_silent": 5000}]
    report = await _call(running, _scenario(steps), speed=2.0)

    assert report.ended_by == "agent"
    assert report.close_code == 1000
    assert len(report.turns) == 1


async def test_the_simulated_stt_follows_the_caller_across_a_process_boundary_and_a_resume(serve: Any) -> None:
    # The server side transcribes with the simulated STT from nothing but the audio it receives (and the
    # stream's customParameters): the caller's words, pauses and noise, echo of the greeting included.
    scenario = _scenario(
        [
            {"say": "I'd like to book… an appointment.", "after_reply_ms": 200},
            {"noise": 150, "after_previous_ms": 300},
            {"drop_socket": {"resume_after_ms": 200}, "after_previous_ms": 300},
            {"say": "Thursday, please.", "after_previous_ms": 300},
            {"hangup": True, "after_previous_ms": 600},
        ]
    )
    providers = SimulatedProviders({"test": scenario}, LatencyProfile.reference())
    running = serve(Behaviour(greeting_ms=1500), providers)

    async def resume() -> dict[str, str]:
        return {"token": "second-token", "scenario": "test"}

    await _call(running, scenario, speed=4.0, resume_parameters=resume, echo_db=-30.0)

    first, second = running.server.streams
    assert [t.text for t in first.transcripts if t.is_final] == ["i'd like to book.", "an appointment."]
    assert [t.text for t in second.transcripts if t.is_final] == ["thursday, please."]
    assert providers.stats.stt_onsets == 4  # three runs of speech and the noise, nothing from the echo
    assert providers.stats.stt_unscripted_onsets == 0
