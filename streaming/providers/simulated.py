"""Simulated STT, LLM and TTS: deterministic, driven by a scenario, with the latency of a profile.

Used by the tests, the demo and the benchmarks in place of Transcribe, the LLM and Polly. Each one takes
the time a LatencyProfile gives it, so the engine's own overhead can be measured against known provider
latencies (GUIDE section 6):

- Speech-to-text knows the caller's script, not the audio's content: it detects onsets of caller energy
  (20 ms frames above ENERGY_THRESHOLD_DBFS after RUN_GAP_MS of quiet) and aligns the k-th onset with the
  k-th run of sound in the script (speech.py). Its clock is the audio itself (samples received), so it
  behaves the same on a fast clock: a word appears, stable, in a partial `stt_word_lag_ms` after the word
  ends in the audio; a segment's final comes `stt_final_lag_ms` after its last word ends. Noise bursts
  give no text. It works across processes, and on a resumed stream too: the simulator passes how many
  runs earlier streams carried (scenario.SOUND_RUNS_PARAMETER); successive sessions of one call carry on
  through the script where the last one stopped.
- The language model answers the Nth user message with the scenario's Nth agent reply (after a tool
  result: that reply's `then`), streamed as tokens: the first after `llm_first_token_ms`, then
  `llm_tokens_per_s`. A token is up to 4 non-space characters with the whitespace before it ("Sure",
  ",", " appo", "intm", "ent"): about 1.3 tokens per English word, like a BPE tokenizer. A tool call
  comes after its arguments' tokens. Without a script it answers "You said: <text>".
- Text-to-speech gives 65 ms of speech-like audio per character (at least 300 ms), PCM16 8 kHz at
  -18 dBFS RMS, cut from one pre-synthesized voice at an offset derived from the text (deterministic, and
  no synthesis per request: the capacity benchmark runs hundreds of calls on these); first chunk after
  `tts_first_byte_ms`, then `tts_chunk_ms` chunks at `tts_realtime_factor` times real time.

LLM and TTS latencies are wall-clock (they are the providers' own time); LatencyProfile.scaled(speed)
divides them for a call simulated on a fast clock.
"""

import asyncio
import heapq
import json
import math
import re
import zlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any, Final, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streaming.audio import synth
from streaming.audio.codec import FRAME_BYTES_PCM, FRAME_SAMPLES, SAMPLE_RATE
from streaming.audio.level import FULL_SCALE, db_to_gain
from streaming.providers.base import (
    CallProviders,
    LlmEvent,
    SpeechSession,
    TextDelta,
    ToolCall,
    Transcript,
    last_user_text,
)
from streaming.simulator.scenario import SOUND_RUNS_PARAMETER, AgentReply, Scenario, ScriptedTool
from streaming.simulator.speech import SoundRun
from switchboard.agent import AgentConfig, Voice
from switchboard.state import ChatMessage

# "About -45 dBFS" in the brief; -40 keeps a speakerphone echo of the simulated agent (-30 dB under
# frames of at most -13 dBFS) out, and caller speech at -20 dBFS (quietest frames about -31 dBFS) in.
ENERGY_THRESHOLD_DBFS: Final = -40.0
# Quiet this long ends a run of caller energy; the script keeps runs at least speech.MIN_GAP_MS apart.
RUN_GAP_MS: Final = 200
TTS_MS_PER_CHARACTER: Final = 65
TTS_MIN_MS: Final = 300
TTS_LEVEL_DBFS: Final = -18.0
TTS_PEAK_FRAME_DBFS: Final = -13.0
_TTS_VOICE_MS: Final = 20_000
_TTS_VOICE_F0: Final = 200.0
_TTS_VOICE_SEED: Final = 1729
_SAMPLES_PER_MS: Final = SAMPLE_RATE // 1000
_PCM_BYTES_PER_MS: Final = 2 * _SAMPLES_PER_MS
_THRESHOLD_MEAN_SQUARE: Final = (FULL_SCALE * db_to_gain(ENERGY_THRESHOLD_DBFS)) ** 2
_TOKEN = re.compile(r"\s*\S{1,4}")
_PUNCTUATION = re.compile(r"[^\w'-]+")


class UnknownScenario(LookupError):
    """The stream names no scenario, or one the simulated providers were not given."""


class LatencyProfile(BaseModel):
    """How long the simulated providers take. STT lags are in audio time, the rest in wall-clock time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stt_word_lag_ms: int = Field(default=150, ge=0, le=10_000)
    stt_final_lag_ms: int = Field(default=150, ge=0, le=10_000)
    llm_first_token_ms: float = Field(default=350.0, ge=0, le=60_000)
    llm_tokens_per_s: float | None = Field(default=80.0, gt=0, description="None: every token at once.")
    tts_first_byte_ms: float = Field(default=120.0, ge=0, le=60_000)
    tts_realtime_factor: float | None = Field(default=2.0, gt=0, description="None: all chunks at once.")
    tts_chunk_ms: int = Field(default=100, ge=20, le=100)

    @classmethod
    def reference(cls) -> Self:
        """GUIDE section 6: STT words 150 ms behind, final 150 ms after; LLM 350 ms then 80 tokens/s;
        TTS first byte 120 ms, then twice real time."""
        return cls()

    @classmethod
    def instant(cls) -> Self:
        """No waiting anywhere: for tests of behaviour, not of timing."""
        return cls(
            stt_word_lag_ms=0,
            stt_final_lag_ms=0,
            llm_first_token_ms=0.0,
            llm_tokens_per_s=None,
            tts_first_byte_ms=0.0,
            tts_realtime_factor=None,
        )

    def scaled(self, speed: float) -> Self:
        """The wall-clock latencies of a call simulated `speed` times faster than real time."""
        return self.model_copy(
            update={
                "llm_first_token_ms": self.llm_first_token_ms / speed,
                "llm_tokens_per_s": None if self.llm_tokens_per_s is None else self.llm_tokens_per_s * speed,
                "tts_first_byte_ms": self.tts_first_byte_ms / speed,
                "tts_realtime_factor": None if self.tts_realtime_factor is None else self.tts_realtime_factor * speed,
            }
        )


@dataclass
class SimulationStats:
    """Counts across every call of one SimulatedProviders: what tests and benchmarks check."""

    stt_sessions: int = 0
    stt_onsets: int = 0
    stt_unscripted_onsets: int = 0  # energy beyond the end of the script: echo or a misaligned call
    stt_finals: int = 0
    llm_replies: int = 0
    llm_replies_completed: int = 0
    llm_replies_cancelled: int = 0
    tts_requests: int = 0
    tts_requests_cancelled: int = 0
    tts_audio_ms: int = 0


async def _sleep_until(deadline: float) -> None:
    """Sleep until loop time `deadline`; always yields, so a cancelled consumer stops promptly."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, deadline - loop.time()))


# -- speech-to-text -------------------------------------------------------------------------------------


def _spoken(word: str) -> str:
    return _PUNCTUATION.sub("", word.lower()).strip("'-")


def partial_text(words: Sequence[str]) -> str:
    """A partial as Transcribe gives it here: lower-case words, no punctuation."""
    return " ".join(_spoken(word) for word in words)


def final_text(words: Sequence[str]) -> str:
    """A final: lower-case, commas kept, "?" after a question and "." after anything else."""
    parts = [_spoken(word) + ("," if word.rstrip().endswith(",") else "") for word in words]
    parts[-1] = parts[-1].rstrip(",")
    return " ".join(parts) + ("?" if words[-1].rstrip().endswith("?") else ".")


def frame_is_loud(pcm16: bytes) -> bool:
    """Whether a frame's RMS level is above ENERGY_THRESHOLD_DBFS. Digital silence costs one comparison."""
    if not pcm16.strip(b"\x00"):
        return False
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32)
    return float(np.dot(samples, samples)) > _THRESHOLD_MEAN_SQUARE * samples.size


class ScriptCursor:
    """Which run of the script the next onset of caller energy is: shared by every session of a call, so
    an engine that opens a new session (per turn, or after the provider closed one) stays aligned."""

    def __init__(self, runs: Sequence[SoundRun], first_run: int = 0) -> None:
        self._runs = runs
        self._next = first_run

    def take(self) -> tuple[int, SoundRun | None]:
        """The next run and its index in the whole script; None past its end."""
        index = self._next
        self._next += 1
        return index, self._runs[index] if index < len(self._runs) else None


class SimulatedSpeechSession:
    def __init__(self, script: ScriptCursor, profile: LatencyProfile, stats: SimulationStats):
        self._script = script
        self._word_lag = profile.stt_word_lag_ms
        self._final_lag = profile.stt_final_lag_ms
        self._stats = stats
        self._queue: asyncio.Queue[Transcript | None] = asyncio.Queue()
        self._due: list[tuple[int, int, Transcript]] = []
        self._order = 0
        self._samples = 0
        self._in_run = False
        self._quiet_samples = 0
        self._segment_id = ""
        self._segment_start = 0
        self._segment_words: list[str] = []
        self._closed = False

    async def send_audio(self, pcm16: bytes) -> None:
        if self._closed:
            return
        if len(pcm16) == FRAME_BYTES_PCM:
            self._frame(pcm16)
        else:
            # Energy is judged per 20 ms whatever the chunk size, so onsets land on the same frame.
            for offset in range(0, len(pcm16), FRAME_BYTES_PCM):
                self._frame(pcm16[offset : offset + FRAME_BYTES_PCM])
        now_ms = self._samples // _SAMPLES_PER_MS
        due = self._due
        while due and due[0][0] <= now_ms:
            self._queue.put_nowait(heapq.heappop(due)[2])

    def _frame(self, pcm16: bytes) -> None:
        samples = len(pcm16) // 2
        start_ms = self._samples // _SAMPLES_PER_MS
        self._samples += samples
        if frame_is_loud(pcm16):
            self._quiet_samples = 0
            if not self._in_run:
                self._in_run = True
                self._onset(start_ms)
        elif self._in_run:
            self._quiet_samples += samples
            if self._quiet_samples >= RUN_GAP_MS * _SAMPLES_PER_MS:
                self._in_run = False

    def _at(self, due_ms: int, transcript: Transcript) -> None:
        self._order += 1
        heapq.heappush(self._due, (due_ms, self._order, transcript))

    def _onset(self, at_ms: int) -> None:
        """Caller energy starts at `at_ms`: the next run of the script; schedule what it will transcribe to."""
        index, run = self._script.take()
        self._stats.stt_onsets += 1
        if run is None:
            self._stats.stt_unscripted_onsets += 1
            return
        if run.kind == "noise":
            return
        if run.starts_segment or not self._segment_id:
            self._segment_id = f"seg-{index}"
            self._segment_start = at_ms
            self._segment_words = []
        words = self._segment_words
        end = at_ms
        for word in run.words:
            words.append(word.text)
            end = at_ms + word.end_ms
            text = partial_text(words)
            self._at(end + self._word_lag, Transcript(self._segment_id, text, text, False, self._segment_start, end))
        if run.ends_segment:
            text = final_text(words)
            self._at(end + self._final_lag, Transcript(self._segment_id, text, text, True, self._segment_start, end))
            self._stats.stt_finals += 1
            self._segment_id = ""

    async def transcripts(self) -> AsyncGenerator[Transcript]:
        while (transcript := await self._queue.get()) is not None:
            yield transcript

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)


class SimulatedSpeechToText:
    def __init__(self, script: ScriptCursor, profile: LatencyProfile, stats: SimulationStats):
        self._script = script
        self._profile = profile
        self._stats = stats

    async def start(self, *, language: str, vocabulary: str | None = None) -> SpeechSession:
        self._stats.stt_sessions += 1
        return SimulatedSpeechSession(self._script, self._profile, self._stats)


# -- language model -------------------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Text as the simulated LLM streams it: up to 4 non-space characters with the whitespace before them."""
    return _TOKEN.findall(text)


def token_delay_s(index: int, profile: LatencyProfile) -> float:
    """When the simulated LLM emits its token number `index` (from 0), in seconds after the request."""
    rate = profile.llm_tokens_per_s
    return profile.llm_first_token_ms / 1000.0 + (index / rate if rate else 0.0)


class SimulatedLanguageModel:
    def __init__(self, replies: Sequence[AgentReply] | None, profile: LatencyProfile, stats: SimulationStats) -> None:
        self._replies = replies or ()
        self._profile = profile
        self._stats = stats
        self.replies_started = 0
        self.replies_cancelled = 0

    def answer(self, messages: Sequence[ChatMessage]) -> tuple[str | None, ScriptedTool | None]:
        """The text and tool call of the next reply, without the timing."""
        turn = sum(message.role == "user" for message in messages)
        scripted = self._replies[turn - 1] if 1 <= turn <= len(self._replies) else None
        if messages and messages[-1].role == "tool":
            if scripted is not None and scripted.tool is not None:
                return scripted.then, None
            return "Okay, that's done.", None
        if scripted is not None:
            return scripted.say, scripted.tool
        said = last_user_text(messages)
        return (f"You said: {said}" if said else "Hello, how can I help?"), None

    async def reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]
    ) -> AsyncGenerator[LlmEvent]:
        text, tool = self.answer(messages)
        turn = sum(message.role == "user" for message in messages)
        self.replies_started += 1
        self._stats.llm_replies += 1
        profile = self._profile
        start = asyncio.get_running_loop().time()
        completed = False
        try:
            pieces = tokens(text) if text else []
            for index, piece in enumerate(pieces):
                await _sleep_until(start + token_delay_s(index, profile))
                yield TextDelta(piece)
            if tool is not None:
                # The call comes once its arguments would have been written, at the same token rate.
                arguments = json.dumps(tool.arguments_on(date.today()))
                await _sleep_until(start + token_delay_s(len(pieces) + math.ceil(len(arguments) / 4), profile))
                yield ToolCall(f"call_{turn}_{tool.name.value}", tool.name.value, arguments)
            completed = True
        finally:
            if completed:
                self._stats.llm_replies_completed += 1
            else:
                self.replies_cancelled += 1
                self._stats.llm_replies_cancelled += 1


# -- text-to-speech -------------------------------------------------------------------------------------


@cache
def _voice() -> bytes:
    """One long stretch of the agent's voice, synthesized once per process.

    Levelled so that no 20 ms frame is louder than TTS_PEAK_FRAME_DBFS, as broadcast speech is: that is
    what keeps a -30 dB speakerphone echo of it under the STT's energy threshold in every frame.
    """
    voice = synth.voiced(_TTS_VOICE_MS, f0=_TTS_VOICE_F0, level_dbfs=TTS_LEVEL_DBFS, seed=_TTS_VOICE_SEED)
    samples = voice.astype(np.float64)
    frames = samples[: samples.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    rms = np.sqrt(np.mean(frames * frames, axis=1)) + 1e-9
    gains = np.minimum(1.0, FULL_SCALE * db_to_gain(TTS_PEAK_FRAME_DBFS) / rms)
    # One gain per frame, held over the frame: the limit holds for every frame exactly.
    levelled = samples[: frames.size] * np.repeat(gains, FRAME_SAMPLES)
    return bytes(np.round(levelled).astype("<i2").tobytes())


def speech_ms(text: str) -> int:
    """How long the simulated TTS speaks `text`: 65 ms a character, at least 300 ms, whole 20 ms frames."""
    characters = len(text.strip())
    if not characters:
        return 0
    return max(TTS_MIN_MS, math.ceil(characters * TTS_MS_PER_CHARACTER / 20) * 20)


def speech_audio(text: str) -> bytes:
    """PCM16 8 kHz audio for `text`: the same for the same text, different (in where it is cut) for another."""
    size = speech_ms(text) * _PCM_BYTES_PER_MS
    if not size:
        return b""
    voice = _voice()
    if size >= len(voice):
        return (voice * (size // len(voice) + 1))[:size]
    offset = zlib.crc32(text.encode()) % (len(voice) - size) & ~1
    return voice[offset : offset + size]


def chunk_delay_s(index: int, profile: LatencyProfile) -> float:
    """When the simulated TTS yields its chunk number `index` (from 0), in seconds after the request."""
    factor = profile.tts_realtime_factor
    return profile.tts_first_byte_ms / 1000.0 + (index * profile.tts_chunk_ms / 1000.0 / factor if factor else 0.0)


class SimulatedTextToSpeech:
    def __init__(self, profile: LatencyProfile, stats: SimulationStats) -> None:
        self._profile = profile
        self._stats = stats

    async def synthesize(self, text: str, *, voice: Voice, language: str) -> AsyncGenerator[bytes]:
        audio = speech_audio(text)
        if not audio:
            return
        profile = self._profile
        self._stats.tts_requests += 1
        chunk = profile.tts_chunk_ms * _PCM_BYTES_PER_MS
        start = asyncio.get_running_loop().time()
        completed = False
        try:
            for index, offset in enumerate(range(0, len(audio), chunk)):
                await _sleep_until(start + chunk_delay_s(index, profile))
                yield audio[offset : offset + chunk]
            completed = True
        finally:
            if completed:
                self._stats.tts_audio_ms += len(audio) // _PCM_BYTES_PER_MS
            else:
                self._stats.tts_requests_cancelled += 1


# -- the set ----------------------------------------------------------------------------------------------


class SimulatedProviders:
    """Providers.for_call for simulated calls: the stream's `scenario` parameter picks the script."""

    def __init__(self, scenarios: Mapping[str, Scenario], profile: LatencyProfile) -> None:
        self._scenarios = dict(scenarios)
        self._runs = {name: tuple(scenario.sound_runs()) for name, scenario in self._scenarios.items()}
        self.profile = profile
        self.stats = SimulationStats()

    def for_call(self, agent: AgentConfig, parameters: Mapping[str, str]) -> CallProviders:
        name = parameters.get("scenario")
        known = ", ".join(sorted(self._scenarios)) or "none"
        if name is None:
            raise UnknownScenario(f"the stream has no 'scenario' parameter (simulated scenarios: {known})")
        scenario = self._scenarios.get(name)
        if scenario is None:
            raise UnknownScenario(f"unknown scenario {name!r} (simulated scenarios: {known})")
        spoken = parameters.get(SOUND_RUNS_PARAMETER, "0")
        if not spoken.isdigit():
            raise ValueError(f"{SOUND_RUNS_PARAMETER} must be a count, got {spoken!r}")
        first_run = int(spoken)
        return CallProviders(
            stt=SimulatedSpeechToText(ScriptCursor(self._runs[name], first_run), self.profile, self.stats),
            llm=SimulatedLanguageModel(scenario.agent_replies, self.profile, self.stats),
            tts=SimulatedTextToSpeech(self.profile, self.stats),
        )
