"""run_call: one simulated Twilio call, from the signed WebSocket upgrade to `stop`, against a media server.

Three tasks share one call clock (clock.py):

- the frame ticker sends the caller's microphone as 20 ms μ-law `media` frames on a fixed schedule
  (silence when the caller is quiet, as Twilio does), plays the ear's due marks back, and mixes the
  speakerphone echo when asked;
- the receiver feeds the server's media, marks and clears to the ear (ear.py);
- the script runs the scenario's steps, each when its trigger holds (evaluated on frame ticks, so a step's
  sound starts on a frame boundary and its timing is known to the frame).

Ticks drive the script rather than sleeps, so that a step starts exactly at the frame the ticker sends
next, on a real-time clock and on a fast one alike.
"""

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Final

import numpy as np
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streaming.audio.codec import FRAME_BYTES_ULAW, FRAME_MS, array_to_ulaw, ulaw_to_array
from streaming.audio.level import db_to_gain
from streaming.simulator import wire
from streaming.simulator.clock import SimClock
from streaming.simulator.ear import Ear
from streaming.simulator.report import SEND_LAG_BUCKETS, CallLog, CallReport, StepLog, build_report
from streaming.simulator.scenario import (
    SOUND_RUNS_PARAMETER,
    Backchannel,
    DropSocket,
    Dtmf,
    Hangup,
    Noise,
    Say,
    Scenario,
    Trigger,
    WaitSilent,
)
from streaming.simulator.speech import MIN_GAP_MS, CallerSound
from streaming.simulator.voice import CallerVoice, render, spoken
from switchboard.observability import call_context, logger

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
# The loudest speakerphone echo allowed: the simulated STT's energy threshold (-40 dBFS) must stay above
# the echo of the simulated agent's audio, whose loudest frames are -13 dBFS.
MAX_ECHO_DB: Final = -30.0
# Server messages are small; a huge one is a bug on the other side, not something to buffer.
MAX_MESSAGE_BYTES: Final = 1 << 20
_SILENT_FRAME: Final = b"\xff" * FRAME_BYTES_ULAW
_SILENT_PAYLOAD: Final = base64.b64encode(_SILENT_FRAME).decode("ascii")
_AUDIO_CACHE_SIZE: Final = 256
_audio_cache: dict[tuple[str, int], bytes] = {}

ResumeParameters = Callable[[], Awaitable[dict[str, str]]]


def stream_signature(auth_token: str, public_stream_url: str) -> str:
    """X-Twilio-Signature of a media stream's upgrade: over the public wss:// URL, with no params."""
    return str(RequestValidator(auth_token).compute_signature(public_stream_url, {}))


class _Microphone:
    """What the caller's line carries, frame by frame: a step's audio while it plays, silence otherwise."""

    def __init__(self) -> None:
        self._frames: list[bytes] = []
        self._payloads: list[str] = []
        self._onsets: frozenset[int] = frozenset()
        self._next = 0
        self._done: asyncio.Future[None] | None = None

    def play(self, ulaw: bytes, onset_frames: frozenset[int]) -> asyncio.Future[None]:
        """Queue a step's audio (a whole number of frames); the future is done once its last frame is out."""
        self._frames = [ulaw[i : i + FRAME_BYTES_ULAW] for i in range(0, len(ulaw), FRAME_BYTES_ULAW)]
        self._payloads = [base64.b64encode(frame).decode("ascii") for frame in self._frames]
        self._onsets = onset_frames
        self._next = 0
        self._done = asyncio.get_running_loop().create_future()
        return self._done

    def frame(self) -> tuple[bytes, str, bool]:
        """The next frame, its base64, and whether caller speech starts in it."""
        index = self._next
        if index >= len(self._frames):
            return _SILENT_FRAME, _SILENT_PAYLOAD, False
        self._next = index + 1
        return self._frames[index], self._payloads[index], index in self._onsets

    def settle(self) -> None:
        """Called once a tick is complete: the step's future resolves only when the clock shows its end."""
        if self._done is not None and self._next >= len(self._frames) and not self._done.done():
            self._done.set_result(None)


class _Stream:
    """One WebSocket to the media server: one Twilio stream of the call."""

    def __init__(self, ws: ClientConnection, stream_sid: str, call_sid: str, account_sid: str) -> None:
        self.ws = ws
        self.stream_sid = stream_sid
        self._call_sid = call_sid
        self._account_sid = account_sid
        self._sequence = 0
        self._chunk = 0

    @classmethod
    async def open(
        cls, url: str, signature: str, call_sid: str, account_sid: str, parameters: dict[str, str]
    ) -> "_Stream":
        # No permessage-deflate: Twilio does not compress, and it would cost both sides CPU on every frame.
        ws = await connect(
            url, additional_headers={SIGNATURE_HEADER: signature}, max_size=MAX_MESSAGE_BYTES, compression=None
        )
        stream = cls(ws, "MZ" + secrets.token_hex(16), call_sid, account_sid)
        await ws.send(wire.connected_message())
        await ws.send(wire.start_message(stream._next(), stream.stream_sid, call_sid, account_sid, parameters))
        return stream

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    async def send_media(self, payload_b64: str) -> None:
        self._chunk += 1
        timestamp = (self._chunk - 1) * FRAME_MS
        await self.ws.send(wire.media_message(self._next(), self.stream_sid, self._chunk, timestamp, payload_b64))

    async def send_mark(self, name: str) -> None:
        await self.ws.send(wire.mark_echo_message(self._next(), self.stream_sid, name))

    async def send_dtmf(self, digit: str) -> None:
        await self.ws.send(wire.dtmf_message(self._next(), self.stream_sid, digit))

    async def send_stop(self) -> None:
        await self.ws.send(wire.stop_message(self._next(), self.stream_sid, self._call_sid, self._account_sid))

    def abort(self) -> None:
        """Drop the connection as a network failure would: no `stop`, no closing handshake."""
        self.ws.transport.abort()


def _step_audio(scenario: Scenario, scenario_key: str, index: int, sound: CallerSound) -> bytes:
    """The rendered audio of a step, cached: many simultaneous calls of one scenario render it once."""
    key = (scenario_key, index)
    audio = _audio_cache.get(key)
    if audio is None:
        step = scenario.steps[index]
        noise_dbfs = step.level_dbfs if isinstance(step, Noise) else -30.0
        audio = render(
            sound,
            f0=scenario.caller_f0,
            level_dbfs=scenario.caller_level_dbfs,
            noise_dbfs=noise_dbfs,
            seed=scenario.seed(index),
        )
        if len(_audio_cache) >= _AUDIO_CACHE_SIZE:
            _audio_cache.clear()
        _audio_cache[key] = audio
    return audio


def _step_text(step: object) -> str | None:
    if isinstance(step, Say):
        return step.say
    if isinstance(step, Backchannel):
        return step.backchannel
    if isinstance(step, Dtmf):
        return step.dtmf
    return None


class _Call:
    def __init__(
        self,
        url: str,
        *,
        signature: str,
        call_sid: str,
        scenario: Scenario,
        speed: float,
        resume_parameters: ResumeParameters | None,
        echo_db: float | None,
        voice: CallerVoice | None = None,
    ) -> None:
        self._url = url
        self._signature = signature
        self._call_sid = call_sid
        self._account_sid = "AC" + hashlib.sha256(call_sid.encode()).hexdigest()[:32]
        self._scenario = scenario
        self._resume_parameters = resume_parameters
        self._echo_gain = None if echo_db is None else db_to_gain(echo_db)
        self._clock = SimClock(speed)
        self._ear = Ear(keep_audio=echo_db is not None)
        self._log = CallLog(call_sid=call_sid, scenario=scenario.name, speed=speed, ear=self._ear)
        self._mic = _Microphone()
        self._stream: _Stream | None = None
        self._tick_ms = 0.0
        self._tick_waiters: list[asyncio.Future[None]] = []
        self._ended = asyncio.Event()
        self._sound_runs_sent = 0
        self._last_sound_end = float("-inf")
        scenario_key = scenario.model_dump_json()
        self._sounds: dict[int, CallerSound] = {}
        self._audio: dict[int, bytes] = {}
        for index, step in enumerate(scenario.steps):
            text = _step_text(step) if isinstance(step, Say | Backchannel) else None
            if voice is not None and text is not None:
                pause_ms = (step.pause_ms if isinstance(step, Say) else None) or scenario.pause_ms
                self._sounds[index], self._audio[index] = spoken(text, voice, pause_ms=pause_ms)
            elif (sound := scenario.sound(index)) is not None:
                self._sounds[index] = sound
                self._audio[index] = _step_audio(scenario, scenario_key, index, sound)
        self._tasks: list[asyncio.Task[None]] = []
        self._group: asyncio.TaskGroup | None = None

    async def run(self, parameters: Mapping[str, str]) -> CallReport:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                await self._open_stream(parameters)
                # Call time 0 is the first stream's `start`: frame counts do not depend on connecting time.
                self._clock.restart()
                self._spawn(self._ticker())
                self._spawn(self._script())
                # The call ends when either side hangs up; a task that fails ends it through the group.
                await self._ended.wait()
                for task in self._tasks:
                    task.cancel()
        except BaseExceptionGroup as failed:
            if len(failed.exceptions) == 1:
                raise failed.exceptions[0] from None
            raise
        finally:
            if self._stream is not None:
                await self._stream.ws.close()
        self._log.duration_ms = self._clock.now_ms()
        report = build_report(self._log)
        logger.debug(
            "simulated call ended",
            extra={
                "scenario": report.scenario,
                "ended_by": report.ended_by,
                "turns": len(report.turns),
                "streams": report.streams,
            },
        )
        return report

    # -- streams ---------------------------------------------------------------------------------------

    async def _open_stream(self, parameters: Mapping[str, str]) -> None:
        custom = {**parameters, SOUND_RUNS_PARAMETER: str(self._sound_runs_sent)}
        stream = await _Stream.open(self._url, self._signature, self._call_sid, self._account_sid, custom)
        self._log.streams += 1
        self._stream = stream
        self._spawn(self._receive(stream))

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        assert self._group is not None
        self._tasks.append(self._group.create_task(work))

    async def _receive(self, stream: _Stream) -> None:
        ear = self._ear
        try:
            async for raw in stream.ws:
                now = self._clock.now_ms()
                try:
                    message = wire.parse_server_message(raw)
                except wire.MalformedServerMessage:
                    self._log.malformed_messages += 1
                    continue
                if isinstance(message, wire.ServerMedia):
                    ear.media(now, message.media.payload)
                elif isinstance(message, wire.ServerMark):
                    if ear.mark(now, message.mark.name):
                        await stream.send_mark(message.mark.name)
                else:
                    for name in ear.clear(now):
                        await stream.send_mark(name)
        except ConnectionClosed:
            pass
        if stream is self._stream:
            # Not our own drop or hang-up: the server ended the call.
            self._stream = None
            self._log.ended_by = "agent"
            self._log.close_code = stream.ws.close_code
            self._log.close_reason = stream.ws.close_reason or ""
            self._ended.set()

    # -- the frame clock -------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        clock = self._clock
        tick = int(clock.now_ms() // FRAME_MS) + 1
        while True:
            at = tick * FRAME_MS
            delay = clock.wall_delay_s(at)
            if delay > 0:
                await asyncio.sleep(delay)
                # A busy loop wakes the ticker late: the frame goes out that late, and the server counts it
                # as inbound lag, so it is measured here too.
                late = -clock.wall_delay_s(at)
            else:
                # Behind schedule (a busy loop): send now, but let the script and the receiver run.
                late = -delay
                await asyncio.sleep(0)
            late_ms = max(0.0, late * 1000.0 * clock.speed)
            log = self._log
            if late_ms > log.max_send_lag_ms:
                log.max_send_lag_ms = late_ms
            log.send_lag_counts[min(int(late_ms), SEND_LAG_BUCKETS - 1)] += 1
            frame, payload, onset = self._mic.frame()
            if onset:
                self._ear.caller_input(at - FRAME_MS)
            if self._echo_gain is not None:
                heard = self._ear.heard(at - FRAME_MS, at)
                if heard is not None:
                    payload = base64.b64encode(self._with_echo(frame, heard)).decode("ascii")
            stream = self._stream
            if stream is not None:
                try:
                    await stream.send_media(payload)
                    self._log.frames_sent += 1
                    # Marks are played back on the frame grid, like everything the ticker does.
                    for name in self._ear.due_marks(at):
                        await stream.send_mark(name)
                except ConnectionClosed:
                    pass  # the receiver sees it too and decides whether the call is over
            self._tick_ms = at
            self._mic.settle()
            waiters, self._tick_waiters = self._tick_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            tick += 1

    def _with_echo(self, frame: bytes, heard: bytes) -> bytes:
        assert self._echo_gain is not None
        mixed = ulaw_to_array(frame).astype(np.float32) + ulaw_to_array(heard).astype(np.float32) * self._echo_gain
        return array_to_ulaw(np.clip(mixed, -32768, 32767).astype(np.int16))

    async def _next_tick(self) -> float:
        waiter = asyncio.get_running_loop().create_future()
        self._tick_waiters.append(waiter)
        await waiter
        return self._tick_ms

    async def _until(self, at_ms: float) -> None:
        while self._tick_ms < at_ms:
            await self._next_tick()

    # -- the script ------------------------------------------------------------------------------------

    async def _script(self) -> None:
        scenario = self._scenario
        previous: StepLog | None = None
        for index, step in enumerate(scenario.steps):
            log = StepLog(index, step.kind, _step_text(step), step.expects_answer)
            self._log.steps.append(log)
            log.timed_out = not await self._triggered(step.trigger, previous)
            sound = self._sounds.get(index)
            if sound is not None:
                await self._until(self._last_sound_end + MIN_GAP_MS)
                await self._sound(index, sound, log)
            elif isinstance(step, Dtmf):
                await self._dtmf(step, log)
            elif isinstance(step, WaitSilent):
                log.started_ms = self._tick_ms
                await self._until(log.started_ms + step.wait_silent)
            elif isinstance(step, DropSocket):
                await self._drop_and_resume(step, log)
            elif isinstance(step, Hangup):
                log.started_ms = self._tick_ms
                await self._hang_up()
                log.ended_ms = self._clock.now_ms()
                return
            if log.ended_ms is None:
                log.ended_ms = self._tick_ms
            previous = log
        # No explicit hang-up: let the agent have its say (it may end the call itself), then hang up.
        await self._triggered(Trigger("after_reply", scenario.hangup_after_ms), previous)
        await self._hang_up()

    async def _triggered(self, trigger: Trigger, previous: StepLog | None) -> bool:
        """Wait, tick by tick, until `trigger` holds. False when step_timeout_ms passed first."""
        ear = self._ear
        eligible = self._tick_ms
        deadline = eligible + self._scenario.step_timeout_ms
        input_end = 0.0
        needs_reply = True
        if previous is not None:
            input_end = previous.input_end_ms or 0.0
            needs_reply = previous.expects_answer
        replies_before = len(ear.replies)
        reference = ear.replies[-1] if trigger.kind == "during_reply" and ear.playing(eligible) else None
        while True:
            now = self._tick_ms
            if trigger.kind == "after_previous":
                if now >= eligible + trigger.ms:
                    return True
            elif trigger.kind == "during_reply":
                if reference is None and len(ear.replies) > replies_before:
                    reference = ear.replies[replies_before]
                if reference is not None and now >= reference.start_ms + trigger.ms:
                    return True
            else:
                answered = not needs_reply or any(reply.start_ms >= input_end for reply in ear.replies)
                quiet_since = max(ear.quiet_since, eligible)
                if answered and not ear.playing(now) and now - quiet_since >= trigger.ms:
                    return True
            if now >= deadline:
                return False
            await self._next_tick()

    async def _sound(self, index: int, sound: CallerSound, log: StepLog) -> None:
        start = self._tick_ms
        onsets = frozenset(run.offset_ms // FRAME_MS for run in sound.runs if run.kind == "speech")
        done = self._mic.play(self._audio[index], onsets)
        log.started_ms = start
        log.sounds = [(start + run.offset_ms, start + run.end_ms, run.kind) for run in sound.runs]
        log.pauses = [(start + a, start + b) for a, b in sound.pauses]
        self._sound_runs_sent += len(sound.runs)
        self._last_sound_end = start + sound.runs[-1].end_ms
        await done
        log.ended_ms = start + sound.duration_ms

    async def _dtmf(self, step: Dtmf, log: StepLog) -> None:
        for position, digit in enumerate(step.dtmf):
            if position:
                await self._clock.sleep_until(log.dtmf_ms[-1] + step.interval_ms)
            now = self._clock.now_ms()
            if log.started_ms is None:
                log.started_ms = now
            if self._stream is not None:
                await self._stream.send_dtmf(digit)
                self._log.dtmf_sent += 1
            self._ear.caller_input(now)
            log.dtmf_ms.append(now)
        log.ended_ms = log.dtmf_ms[-1]

    async def _drop_and_resume(self, step: DropSocket, log: StepLog) -> None:
        stream = self._stream
        log.started_ms = dropped_at = self._clock.now_ms()
        self._stream = None
        if stream is not None:
            stream.abort()
        self._ear.drop(dropped_at)
        if self._resume_parameters is None:
            raise RuntimeError("drop_socket needs resume_parameters")
        await self._until(dropped_at + step.drop_socket.resume_after_ms)
        await self._open_stream(await self._resume_parameters())
        log.ended_ms = self._clock.now_ms()

    async def _hang_up(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                await stream.send_stop()
                await stream.ws.close()
            except ConnectionClosed:
                pass
        self._log.ended_by = "caller"
        self._ended.set()


async def run_call(
    url: str,
    *,
    public_stream_url: str,
    auth_token: str,
    call_sid: str,
    parameters: dict[str, str],
    scenario: Scenario,
    speed: float = 1.0,
    resume_parameters: ResumeParameters | None = None,
    echo_db: float | None = None,
    voice: CallerVoice | None = None,
) -> CallReport:
    """Play `scenario` as the caller of one Twilio call against the media server at `url` (ws://…/media).

    The upgrade is signed as Twilio signs it, over `public_stream_url` (the wss:// URL in `<Stream url>`)
    with `auth_token`. `parameters` are the stream's customParameters (token, scenario, …); a resume after
    a drop_socket step takes fresh ones from `resume_parameters()`. `speed` > 1 runs the call clock that
    many times faster than real time. `echo_db` mixes the agent's audio back into the caller's at that
    level (a speakerphone; at most MAX_ECHO_DB). `voice` speaks the caller's lines with a real synthesizer
    instead of the planned speech-like sound, for a speech-to-text that hears audio rather than reading the
    script (the offline engines). Connection failures on the first upgrade raise.
    """
    if echo_db is not None and echo_db > MAX_ECHO_DB:
        raise ValueError(f"echo_db must be at most {MAX_ECHO_DB} dB, got {echo_db}")
    if resume_parameters is None and any(isinstance(step, DropSocket) for step in scenario.steps):
        raise ValueError(f"scenario {scenario.name!r} drops the socket: pass resume_parameters for the new stream")
    with call_context(call_sid):
        call = _Call(
            url,
            signature=stream_signature(auth_token, public_stream_url),
            call_sid=call_sid,
            scenario=scenario,
            speed=speed,
            resume_parameters=resume_parameters,
            echo_db=echo_db,
            voice=voice,
        )
        return await call.run(parameters)
