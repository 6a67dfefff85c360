"""What each agent turn cost, stage by stage, and the call engine's metrics.

`TurnReport` is filled in as a turn runs (monotonic timestamps from the engine's clock), handed to the
`on_turn` observer (tests, the benchmark) and published as EMF metrics.

Metrics and concurrency: Powertools' `metrics` is one buffer per process, shared by every call. All calls
run on one event loop thread, so adding to it needs no lock; what cannot be shared is a dimension, which
Powertools sets for the whole buffer. So:

- un-dimensioned values (latencies, counts) go into the shared buffer, where one EMF document carries up
  to 100 values per metric: Powertools flushes by itself at 100, `flush_metrics_if_due()` after a turn
  flushes when the buffer is older than FLUSH_INTERVAL_S, and every call flushes when it ends;
- dimensioned counts (EndOfTurn by reason, Errors by kind) are written at once as their own document
  (streaming.counters, `single_metric`): a few per turn, never per frame.
"""

import time
from dataclasses import dataclass, field
from typing import Final

from aws_lambda_powertools.metrics import MetricUnit

from streaming import counters
from switchboard.observability import metrics

FLUSH_INTERVAL_S: Final = 10.0
_LAG_BUCKETS: Final = 200  # 1 ms buckets; the last one holds everything from 199 ms up


class FrameLag:
    """Inbound frame lag (wall arrival versus the time its timestamp says it should arrive) as a histogram.

    One list increment per frame: percentiles are read per turn, not per frame. The expected arrival is
    anchored at the earliest-arriving frame seen (the smallest arrival - timestamp offset), so network
    jitter before it and a slow start do not count as lag.
    """

    __slots__ = ("_counts", "_min_offset", "_total", "frames", "max_ms", "total_frames", "total_max_ms")

    def __init__(self) -> None:
        self._counts = [0] * _LAG_BUCKETS
        self._total = [0] * _LAG_BUCKETS
        self._min_offset = float("inf")
        self.frames = 0
        self.max_ms = 0.0
        self.total_frames = 0
        self.total_max_ms = 0.0

    def record(self, arrival_s: float, timestamp_ms: int) -> float:
        offset = arrival_s - timestamp_ms / 1000.0
        if offset < self._min_offset:
            self._min_offset = offset
        lag_ms = (offset - self._min_offset) * 1000.0
        bucket = int(lag_ms)
        self._counts[bucket if bucket < _LAG_BUCKETS else _LAG_BUCKETS - 1] += 1
        self.frames += 1
        if lag_ms > self.max_ms:
            self.max_ms = lag_ms
        return lag_ms

    def percentile(self, fraction: float, *, whole_stream: bool = False) -> float:
        """The upper edge of the bucket holding that fraction of frames (ms), in the current window or
        over the whole stream; 0 with no frames."""
        counts = self._merged() if whole_stream else self._counts
        frames = sum(counts)
        if not frames:
            return 0.0
        wanted = fraction * frames
        seen = 0
        for bucket, count in enumerate(counts):
            seen += count
            if seen >= wanted:
                return float(bucket + 1)
        return float(_LAG_BUCKETS)

    def restart(self) -> None:
        """Start a new window of frames (per turn); the stream's totals keep the old one."""
        self._total = self._merged()
        self.total_frames += self.frames
        self.total_max_ms = max(self.total_max_ms, self.max_ms)
        self._counts = [0] * _LAG_BUCKETS
        self.frames = 0
        self.max_ms = 0.0

    def _merged(self) -> list[int]:
        return [total + count for total, count in zip(self._total, self._counts, strict=True)]


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start) * 1000.0


@dataclass(slots=True)
class TurnReport:
    """One agent turn, timed. Timestamps are the engine clock's (time.monotonic in production), in s.

    The reply's critical path, from the caller's last voiced frame to the echo of the mark after the
    reply's first 20 ms of audio (what the caller hears, as far as the server can see):

        S speech_end → T transcript_ready → G reply_start → L llm_start → F llm_first_token
        → C first_chunk → Q tts_request → B tts_first_byte → R released → A first_audio_sent → M first_mark_echo

    G is when the engine decided to start the reply: on a stable, complete-looking partial (speculative)
    or at the end of turn E. R = max(B, E): the first audio was both synthesized and allowed out (a
    speculative reply's audio is held until the end of turn). Then, exactly:

        v2v_ms       = M - S
                     = stt + endpointing + llm + tts + overhead + playout, where
        stt          = min(T, G) - S            the STT's lag behind the caller
        endpointing  = (G - min(T, G)) + (R - B) waiting for the turn to end: before starting the reply,
                                                 and holding its ready audio until the end was certain
        llm          = C - L                    first token, then the tokens of the first clause
        tts          = B - Q                    TTS time to first byte
        playout      = M - A                    Twilio: transport, jitter buffer, the first 20 ms playing
        overhead     = (L - G) + (Q - C) + (A - R)   our own time between the stages

    `provider_ms` = stt + llm + tts; `overhead_ms` = v2v - provider - endpointing - playout.
    `endpointing_wait_ms` (E - S) is the end-of-turn decision itself, reported whatever the path.
    """

    call_sid: str
    turn: int
    kind: str  # "reply", "greeting", "reprompt", "goodbye"
    speculative: bool = False
    interrupted: bool = False
    filler_played: bool = False
    end_of_turn_reason: str | None = None
    speech_end: float | None = None
    transcript_ready: float | None = None
    end_of_turn: float | None = None
    reply_start: float | None = None
    llm_start: float | None = None
    llm_first_token: float | None = None
    first_chunk: float | None = None
    tts_request: float | None = None
    tts_first_byte: float | None = None
    first_audio_sent: float | None = None
    first_mark_echo: float | None = None
    frames: int = 0
    frame_lag_p50_ms: float = 0.0
    frame_lag_p99_ms: float = 0.0
    frame_lag_max_ms: float = 0.0
    errors: list[str] = field(default_factory=list)

    # -- stage times (ms) -------------------------------------------------------------------------------

    @property
    def v2v_ms(self) -> float | None:
        return _ms(self.speech_end, self.first_mark_echo)

    @property
    def endpointing_wait_ms(self) -> float | None:
        return _ms(self.speech_end, self.end_of_turn)

    @property
    def stt_final_ms(self) -> float | None:
        return _ms(self.speech_end, self.transcript_ready)

    @property
    def llm_first_token_ms(self) -> float | None:
        return _ms(self.llm_start, self.llm_first_token)

    @property
    def first_chunk_ms(self) -> float | None:
        """From the first token to the first clause or sentence ready for TTS."""
        return _ms(self.llm_first_token, self.first_chunk)

    @property
    def tts_first_byte_ms(self) -> float | None:
        return _ms(self.tts_request, self.tts_first_byte)

    @property
    def playout_ms(self) -> float | None:
        return _ms(self.first_audio_sent, self.first_mark_echo)

    @property
    def released(self) -> float | None:
        """R: when the first audio was synthesized and allowed out."""
        if self.tts_first_byte is None:
            return None
        if self.end_of_turn is None:
            return self.tts_first_byte
        return max(self.tts_first_byte, self.end_of_turn)

    def _path(self) -> tuple[float, float, float, float, float, float] | None:
        stamps = (
            self.speech_end,
            self.transcript_ready,
            self.reply_start,
            self.llm_start,
            self.first_chunk,
            self.tts_request,
            self.tts_first_byte,
            self.first_audio_sent,
            self.first_mark_echo,
        )
        if any(stamp is None for stamp in stamps) or self.released is None:
            return None
        speech, text, start, llm_start, chunk, request, first_byte, sent, echo = (
            float(stamp) for stamp in stamps if stamp is not None
        )
        released = self.released
        heard = min(text, start)
        stt = heard - speech
        endpointing = (start - heard) + (released - first_byte)
        llm = chunk - llm_start
        tts = first_byte - request
        overhead = (llm_start - start) + (request - chunk) + (sent - released)
        playout = echo - sent
        return stt * 1000, endpointing * 1000, llm * 1000, tts * 1000, overhead * 1000, playout * 1000

    @property
    def provider_ms(self) -> float | None:
        path = self._path()
        return None if path is None else path[0] + path[2] + path[3]

    @property
    def critical_endpointing_ms(self) -> float | None:
        path = self._path()
        return None if path is None else path[1]

    @property
    def overhead_ms(self) -> float | None:
        path = self._path()
        return None if path is None else path[4]

    def as_log(self) -> dict[str, object]:
        """Numbers and flags only: no text, safe at INFO."""
        fields: dict[str, object] = {
            "turn": self.turn,
            "kind": self.kind,
            "speculative": self.speculative,
            "interrupted": self.interrupted,
            "filler_played": self.filler_played,
            "end_of_turn_reason": self.end_of_turn_reason,
            "frame_lag_p99_ms": self.frame_lag_p99_ms,
        }
        for name in (
            "v2v_ms",
            "endpointing_wait_ms",
            "stt_final_ms",
            "llm_first_token_ms",
            "first_chunk_ms",
            "tts_first_byte_ms",
            "provider_ms",
            "overhead_ms",
            "playout_ms",
        ):
            value = getattr(self, name)
            fields[name] = None if value is None else round(value, 1)
        return fields


# -- metrics ----------------------------------------------------------------------------------------------

_last_flush = time.monotonic()

_TURN_METRICS: Final = (
    ("VoiceToVoice", "v2v_ms"),
    ("EndpointingWait", "endpointing_wait_ms"),
    ("SttFinal", "stt_final_ms"),
    ("LlmFirstToken", "llm_first_token_ms"),
    ("FirstSentence", "first_chunk_ms"),
    ("TtsFirstByte", "tts_first_byte_ms"),
    ("EngineOverhead", "overhead_ms"),
)


def publish_turn(report: TurnReport) -> None:
    """The turn's stage times into the shared metrics buffer (see the module docstring)."""
    for name, attribute in _TURN_METRICS:
        value = getattr(report, attribute)
        if value is not None:
            metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=max(0.0, value))
    flush_metrics_if_due()


def count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def count_end_of_turn(reason: str) -> None:
    counters.count("EndOfTurn", reason=reason)


def count_error(kind: str) -> None:
    """Errors{kind}: stt, llm, tts, tool, state, records, events, engine."""
    counters.count("Errors", kind=kind)


def flush_metrics_if_due(now: float | None = None) -> None:
    global _last_flush
    moment = time.monotonic() if now is None else now
    if moment - _last_flush >= FLUSH_INTERVAL_S:
        flush_metrics()


def flush_metrics() -> None:
    global _last_flush
    _last_flush = time.monotonic()
    if metrics.metric_set:
        metrics.flush_metrics()
