"""The caller's voice: a step's sound plan rendered into μ-law audio at 8 kHz.

Words are synth.voiced (one continuous stretch per run, so a run has no dips an energy detector could take
for its end), pauses are digital silence (μ-law 0xFF, what a muted line sends), noise bursts synth.noise.
Deterministic for a seed: a scenario sounds the same on every run.
"""

import numpy as np

from streaming.audio import synth
from streaming.audio.codec import SAMPLE_RATE, array_to_ulaw
from streaming.simulator.speech import CallerSound

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
