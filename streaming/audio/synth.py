"""Speech-like and noise signals at 8 kHz for tests, benchmarks and the call simulator's caller.

`voiced` is a small source-filter model, vectorized with numpy (no scipy, no per-sample Python loop):
a harmonic series at a wandering f0 (the spectrum of a glottal pulse train) whose harmonics are
weighted and phase-shifted by three formant resonances that glide from vowel to vowel, one vowel per
syllable, under a syllable-rate (~4 Hz) envelope, with consonant-like noise bursts at syllable onsets.
Summing weighted harmonics is the frequency-domain equivalent of filtering a pulse train through the
formant filters, without an IIR filter in Python; it costs about 4 ms of CPU per second of audio.
It is speech-like, not speech: WebRTC VAD takes it for speech, Silero mostly does (less so above
f0 ≈ 200 Hz), and neither result says how they fare on real voices (see docs/vad.md).
"""

import math
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from streaming.audio.codec import SAMPLE_RATE
from streaming.audio.level import FULL_SCALE, db_to_gain

__all__ = ["db_to_gain", "hum_and_clicks", "mix", "noise", "silence", "voiced"]

# Peterson & Barney average formants (F1, F2, F3) in Hz of adult male vowels, in ARPAbet:
# iy, ih, eh, ae, aa, ao, uh, uw, ah, er.
_VOWELS: Final = np.array(
    [
        (270, 2290, 3010),
        (390, 1990, 2550),
        (530, 1840, 2480),
        (660, 1720, 2410),
        (730, 1090, 2440),
        (570, 840, 2410),
        (440, 1020, 2240),
        (300, 870, 2240),
        (520, 1190, 2390),
        (490, 1350, 1690),
    ],
    dtype=np.float64,
)
_BANDWIDTHS: Final = np.array([56.0, 70.0, 105.0])  # narrow: WebRTC mode 3 dropped out on broader ones
_TOP_HZ: Final = 3800.0  # telephone band edge: no harmonic above it, so nothing aliases
_SYLLABLE_MS: Final = (160, 340)  # uniform syllable lengths, ~4 syllables per second
_ENVELOPE_FLOOR: Final = 0.03  # the dip between syllables, -30 dB: connected speech rarely stops fully
_BURST_LEVEL: Final = 0.5  # consonant noise relative to the voiced signal's RMS
_BURST_WIDTH: Final = 0.08  # fraction of the syllable over which the onset burst decays
_CONTROL: Final = 16  # formant response recomputed every 2 ms: it moves slowly, and it is costly (arctan2)

Samples = npt.NDArray[np.int16]
_Floats = npt.NDArray[np.float64]


def _samples(duration_ms: int) -> int:
    if duration_ms < 0:
        raise ValueError(f"duration must be >= 0 ms, got {duration_ms}")
    return duration_ms * SAMPLE_RATE // 1000


def _to_int16(signal: _Floats, level_dbfs: float) -> Samples:
    """Scale to an RMS of `level_dbfs` over the whole signal, then clip to int16."""
    rms = math.sqrt(float(np.mean(signal * signal))) if signal.size else 0.0
    if rms == 0.0:
        return np.zeros(signal.size, dtype=np.int16)
    scaled = signal * (FULL_SCALE * db_to_gain(level_dbfs) / rms)
    return np.clip(np.round(scaled), -32768, 32767).astype(np.int16)


def _syllables(n: int, rng: np.random.Generator) -> tuple[_Floats, _Floats]:
    """Syllable boundaries (sample indices, starting at 0 and ending at >= n) and one vowel per syllable."""
    low, high = (ms * SAMPLE_RATE // 1000 for ms in _SYLLABLE_MS)
    lengths = rng.integers(low, high, size=n // low + 2)
    bounds = np.concatenate(([0], np.cumsum(lengths))).astype(np.float64)
    count = int(np.searchsorted(bounds, n, side="left"))
    bounds = bounds[: count + 1]
    vowels = _VOWELS[rng.integers(0, len(_VOWELS), size=count)]
    # Speakers differ: scale every formant a little (vocal tract length), per syllable a little more.
    vowels = vowels * rng.uniform(0.92, 1.08) * rng.uniform(0.95, 1.05, size=(count, 1))
    return bounds, vowels


def voiced(duration_ms: int, f0: float = 120.0, level_dbfs: float = -18.0, seed: int = 0) -> Samples:
    """Continuous voiced speech-like sound: every 20 ms frame is meant to be speech.

    Deterministic for a given seed. `level_dbfs` is the RMS over the whole signal.
    """
    n = _samples(duration_ms)
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    if not 50.0 <= f0 <= 400.0:
        raise ValueError(f"f0 must be within 50..400 Hz, got {f0}")
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    bounds, vowels = _syllables(n, rng)
    # Higher voices come from shorter vocal tracts: formants ~20% higher for a typical female f0.
    vowels = vowels * (1.0 + 0.2 * min(max((f0 - 110.0) / 110.0, 0.0), 1.0))

    position = np.arange(n, dtype=np.float64)
    syllable = np.searchsorted(bounds, position, side="right") - 1
    progress = (position - bounds[syllable]) / (bounds[syllable + 1] - bounds[syllable])

    # Pitch: slow intonation, declination over the utterance and a little smoothed jitter.
    knots = np.arange(int(t[-1] / 0.02) + 2) * 0.02
    jitter = np.interp(t, knots, rng.normal(0.0, 0.015, size=knots.size))
    intonation = 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 1.2) * t + rng.uniform(0, 2 * np.pi))
    pitch = f0 * (1.0 + intonation + jitter) * (1.0 - 0.1 * t / max(t[-1], 1.0))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE

    # Formants glide between vowel targets at syllable centres.
    centres = (bounds[:-1] + bounds[1:]) / 2
    formants = np.stack([np.interp(position, centres, vowels[:, i]) for i in range(3)])

    harmonics = np.arange(1, int(_TOP_HZ // pitch.min()) + 1, dtype=np.float64)[:, None]
    gain, shift = _formant_response(harmonics, pitch[::_CONTROL], formants[:, ::_CONTROL])
    weights = gain * np.exp(1j * shift)
    # sum_k w_k e^{i k phase} by Horner's rule: one complex multiply-add per harmonic over the signal,
    # instead of a (harmonics x samples) table of cosines.
    rotor = np.exp(1j * phase)
    total = np.zeros(n, dtype=np.complex128)
    for k in range(harmonics.size - 1, -1, -1):
        total *= rotor
        total += np.repeat(weights[k], _CONTROL)[:n]
    signal = (total * rotor).real
    # A breathy component: voices are never purely harmonic.
    signal += 0.02 * np.std(signal) * rng.standard_normal(n)
    signal *= _ENVELOPE_FLOOR + (1.0 - _ENVELOPE_FLOOR) * np.sin(np.pi * progress) ** 0.7
    # Fricative-like bursts (differenced, i.e. high-passed, noise) at each syllable onset, where the vowel
    # envelope is lowest: consonants. With them Silero took ~80% of frames for speech instead of ~50%.
    burst = np.exp(-((progress / _BURST_WIDTH) ** 2))
    signal += _BURST_LEVEL * np.std(signal) * np.diff(rng.standard_normal(n + 1)) * burst
    return _to_int16(signal, level_dbfs)


def _formant_response(harmonics: _Floats, pitch: _Floats, formants: _Floats) -> tuple[_Floats, _Floats]:
    """Amplitude and phase of each harmonic through the source slope and three formant resonances.

    The source falls 6 dB per octave (a glottal pulse's -12 dB plus lip radiation's +6 dB); each
    resonance is a second-order resonator with its phase shift, so the waveform rings after each pulse
    as a real vocal tract does. A steeper source (-9 dB) pleased Silero slightly more but made WebRTC's
    mode 3 drop out for up to 200 ms, long enough to split an utterance; this one stays under 100 ms.
    """
    frequency = harmonics * pitch
    gain = np.where(frequency < _TOP_HZ, 1.0 / harmonics, 0.0)
    shift = np.zeros_like(frequency)
    for i in range(3):
        centre = formants[i] ** 2
        real = centre - frequency**2
        imaginary = _BANDWIDTHS[i] * frequency
        gain *= centre / np.hypot(real, imaginary)
        shift -= np.arctan2(imaginary, real)
    return gain, shift


def noise(duration_ms: int, level_dbfs: float, seed: int = 0, color: Literal["white", "pink"] = "white") -> Samples:
    """White or pink (-3 dB per octave, shaped in the frequency domain) Gaussian noise."""
    n = _samples(duration_ms)
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n)
    if color == "white" or n < 2:
        return _to_int16(white, level_dbfs)
    spectrum = np.fft.rfft(white)
    frequency = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum[1:] /= np.sqrt(frequency[1:])
    spectrum[0] = 0.0
    return _to_int16(np.fft.irfft(spectrum, n), level_dbfs)


def hum_and_clicks(
    duration_ms: int, level_dbfs: float, seed: int = 0, mains_hz: float = 60.0, clicks_per_s: float = 5.0
) -> Samples:
    """Mains hum with its harmonics plus random clicks: the non-speech noise of a bad line or handset."""
    n = _samples(duration_ms)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    hum = sum((0.6**k) * np.sin(2 * np.pi * mains_hz * (k + 1) * t + rng.uniform(0, 2 * np.pi)) for k in range(6))
    clicks = np.zeros(n)
    count = rng.poisson(clicks_per_s * n / SAMPLE_RATE)
    decay = np.exp(-np.arange(40) / 6.0)  # a 5 ms exponentially decaying impulse
    for at in rng.integers(0, max(n - 40, 1), size=count):
        length = min(40, n - int(at))
        clicks[at : at + length] += rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 10.0) * decay[:length]
    return _to_int16(np.asarray(hum, dtype=np.float64) + clicks, level_dbfs)


def silence(duration_ms: int) -> Samples:
    """Digital silence."""
    return np.zeros(_samples(duration_ms), dtype=np.int16)


def mix(a: Samples, b: Samples) -> Samples:
    """Sum of two signals, as long as the longer one, clipped to int16."""
    out = np.zeros(max(a.size, b.size), dtype=np.int32)
    out[: a.size] += a
    out[: b.size] += b
    return np.clip(out, -32768, 32767).astype(np.int16)
