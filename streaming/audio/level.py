"""Signal levels in dBFS, where 0 dBFS is the RMS of a full-scale square wave (32768)."""

import math
from typing import Final

import numpy as np
import numpy.typing as npt

FULL_SCALE: Final = 32768.0
# The level reported for digital silence, instead of -inf, so comparisons and JSON stay simple.
SILENCE_DBFS: Final = -120.0
_INT16_LE: Final = np.dtype("<i2")


def db_to_gain(db: float) -> float:
    """Amplitude gain for a level change in dB."""
    return float(10.0 ** (db / 20.0))


def rms_dbfs(samples: npt.NDArray[np.int16]) -> float:
    """RMS level of int16 samples in dBFS; SILENCE_DBFS for empty or all-zero input."""
    if samples.size == 0:
        return SILENCE_DBFS
    values = samples.astype(np.float64)
    mean_square = float(np.dot(values, values)) / samples.size
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(10.0 * math.log10(mean_square / (FULL_SCALE * FULL_SCALE)), SILENCE_DBFS)


def pcm16_dbfs(frame_pcm16: bytes) -> float:
    """RMS level of a little-endian 16-bit PCM frame in dBFS."""
    return rms_dbfs(np.frombuffer(frame_pcm16, _INT16_LE).astype(np.int16, copy=False))
