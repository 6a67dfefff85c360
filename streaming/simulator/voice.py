"""The caller's voice: a step's sound plan rendered into μ-law audio at 8 kHz.

Words are synth.voiced (one continuous stretch per run, so a run has no dips an energy detector could take
for its end), pauses are digital silence (μ-law 0xFF, what a muted line sends), noise bursts synth.noise.
Deterministic for a seed: a scenario sounds the same on every run.
"""

import math
from collections.abc import Callable
from typing import Final

import numpy as np

from streaming.audio import synth
from streaming.audio.codec import FRAME_MS, SAMPLE_RATE, array_to_ulaw
from streaming.simulator.speech import ELLIPSIS, CallerSound, SoundRun, frames_ms, is_spoken, plan_speech

_SAMPLES_PER_MS = SAMPLE_RATE // 1000


def render(sound: CallerSound, *, f0: float, level_dbfs: float, noise_dbfs: float = -30.0, seed: int = 0) -> bytes:
    """μ-law audio of `sound`, exactly sound.duration_ms long."""
    samples = np.zeros(sound.duration_ms * _SAMPLES_PER_MS, dtype=np.int16)
    for index, run in enumerate(sound.runs):
        run_seed = seed + index
        if run.kind == "speech":
            audio = synth.voiced(run.duration_ms, f0=f0, level_dbfs=level_dbfs, seed=run_seed)
        else:
            audio = synth.noise(run.duration_ms, noise_dbfs, seed=run_seed, color="pink")
        start = run.offset_ms * _SAMPLES_PER_MS
        samples[start : start + audio.size] = audio
    return array_to_ulaw(samples)


# A text-to-speech for the caller's lines: the words of `text`, spoken, as PCM16 8 kHz.
CallerVoice = Callable[[str], bytes]
# Samples quieter than this at either end of a synthesized line are its lead-in and tail, not speech.
_TRIM_LEVEL: Final = 300


def spoken(text: str, voice: CallerVoice, *, pause_ms: int) -> tuple[CallerSound, bytes]:
    """`text` said by a real synthesizer instead of planned: its sound plan and its μ-law audio.

    For calls whose speech-to-text hears audio (pocketsphinx) rather than reading the script. Each part of
    the text between "…" is one run, as long as the synthesizer made it (trimmed to its audible samples,
    whole frames); the pauses between parts are digital silence, as in a planned sound.
    """
    pause_ms = frames_ms(pause_ms)
    runs: list[SoundRun] = []
    placed: list[tuple[int, np.ndarray]] = []
    position = 0
    for index, part in enumerate(ELLIPSIS.split(text)):
        if index > 0:
            position += pause_ms
        if not any(is_spoken(word) for word in part.split()):
            continue
        samples = _trimmed(np.frombuffer(voice(part), dtype="<i2"))
        duration = math.ceil(samples.size / (FRAME_MS * _SAMPLES_PER_MS)) * FRAME_MS
        (run,) = plan_speech(part, duration_ms=duration).runs  # the words' times, shared out by length
        runs.append(SoundRun("speech", position, duration, run.words))
        placed.append((position, samples))
        position += duration
    if not runs:
        raise ValueError(f"nothing to say in {text!r}")
    pcm = np.zeros(position * _SAMPLES_PER_MS, dtype=np.int16)
    for offset, samples in placed:
        pcm[offset * _SAMPLES_PER_MS : offset * _SAMPLES_PER_MS + samples.size] = samples
    return CallerSound(tuple(runs), position), array_to_ulaw(pcm)


def _trimmed(samples: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _TRIM_LEVEL)
    if loud.size == 0:
        raise ValueError("the caller's voice produced no audible audio")
    return samples[loud[0] : loud[-1] + 1].astype(np.int16)
