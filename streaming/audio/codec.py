"""G.711 μ-law ⇄ 16-bit PCM at 8 kHz, the format of Twilio Media Streams.

The tables are computed from the G.711 definition (the same integer arithmetic as the Sun reference
implementation that `audioop` uses), never copied from `audioop`, so the tests can hold them against it.

Speed is dominated by per-call overhead, not by the 160 samples of a 20 ms frame, so each direction uses the
path with the fewest C calls that `bench/codec.py` found fastest:

- decode: `codecs.charmap_decode` maps each μ-law byte to one UCS-2 character whose UTF-16-LE encoding is
  the PCM sample, two C calls plus a `bytes.translate` (see `_build_charmap`): ~40% cheaper than numpy on
  a 20 ms frame. Its cost per sample is higher, so inputs above `_CHARMAP_MAX_BYTES` take the numpy path;
- encode: one `np.take` on a 65536-entry table indexed by the uint16 view of the samples.

`audioop` (C) is still faster per 20 ms frame in both directions; bench/codec.py has the numbers.
"""

import codecs
from typing import Final

import numpy as np
import numpy.typing as npt

FRAME_MS: Final = 20
SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES_ULAW: Final = FRAME_SAMPLES
FRAME_BYTES_PCM: Final = FRAME_SAMPLES * 2

_BIAS: Final = 0x84
_CLIP: Final = 8159  # the largest 14-bit magnitude μ-law encodes before it saturates
_SILENCE: Final = 0xFF  # μ-law for 0 (all bits inverted, positive sign)
_SAMPLES_PER_MS: Final = SAMPLE_RATE // 1000
_LE_UINT16: Final = np.dtype("<u2")
_LE_INT16: Final = np.dtype("<i2")
_UINT8: Final = np.dtype(np.uint8)
_CHARMAP_MAX_BYTES: Final = 400  # above ~50 ms of audio the numpy table lookup is the faster decoder


def _decode_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((code & 0x0F) << 3) + _BIAS) << ((code & 0x70) >> 4)
    table = np.where(code & 0x80, _BIAS - magnitude, magnitude - _BIAS).astype(np.int16)
    table.flags.writeable = False
    return table


def _encode_table() -> npt.NDArray[np.uint8]:
    # Every int16 sample, in the order of its uint16 bit pattern, so the table is indexed by that view.
    sample = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    value = sample >> 2  # G.711 μ-law works on 14 bits; an arithmetic shift like the reference
    negative = value < 0
    magnitude = np.minimum(np.where(negative, -value, value), _CLIP) + (_BIAS >> 2)
    segment_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    segment = np.searchsorted(segment_ends, magnitude, side="left")
    mantissa = (magnitude >> np.minimum(segment + 1, 8)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | mantissa)
    table = (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)
    table.flags.writeable = False
    return table


DECODE_TABLE: Final = _decode_table()
ENCODE_TABLE: Final = _encode_table()


def _build_charmap(table: npt.NDArray[np.int16]) -> tuple[str, bytes]:
    """A charmap string and a byte permutation so that decoding is charmap → UTF-16-LE → translate.

    Each μ-law code becomes one character whose code unit is the PCM sample's uint16 value, except that
    UTF-16 cannot encode a lone surrogate (high byte 0xD8..0xDF) and loud negative samples have exactly
    those high bytes. So both bytes of every code unit go through an involution that swaps 0xD8..0xDF
    with eight byte values no sample uses as its high byte; the final `bytes.translate` swaps them back.
    """
    values = [int(v) for v in table.view(np.uint16)]
    used_high = {v >> 8 for v in values}
    surrogate_high = range(0xD8, 0xE0)
    partners = [b for b in range(256) if b not in used_high and b not in surrogate_high][: len(surrogate_high)]
    swap = list(range(256))
    for surrogate, partner in zip(surrogate_high, partners, strict=True):
        swap[surrogate], swap[partner] = partner, surrogate
    charmap = "".join(chr(swap[v >> 8] << 8 | swap[v & 0xFF]) for v in values)
    # U+FFFE marks an undefined code in a charmap and would make decoding fail.
    if "\ufffe" in charmap or any(0xD800 <= ord(c) <= 0xDFFF for c in charmap):
        raise RuntimeError("μ-law charmap construction failed")
    return charmap, bytes(swap)


_CHARMAP, _UNSWAP = _build_charmap(DECODE_TABLE)
_charmap_decode = codecs.charmap_decode
_utf_16_le_encode = codecs.utf_16_le_encode


def ulaw_to_pcm16(data: bytes) -> bytes:
    """μ-law bytes → 16-bit little-endian signed PCM, two bytes per input byte."""
    if len(data) > _CHARMAP_MAX_BYTES:
        return DECODE_TABLE.astype(_LE_INT16, copy=False).take(np.frombuffer(data, _UINT8)).tobytes()
    return _utf_16_le_encode(_charmap_decode(data, "strict", _CHARMAP)[0])[0].translate(_UNSWAP)


def pcm16_to_ulaw(data: bytes) -> bytes:
    """16-bit little-endian signed PCM → μ-law bytes, one byte per sample."""
    if len(data) % 2:
        raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(data)}")
    return ENCODE_TABLE.take(np.frombuffer(data, _LE_UINT16)).tobytes()


def ulaw_to_array(data: bytes) -> npt.NDArray[np.int16]:
    """μ-law bytes → a new int16 sample array."""
    return DECODE_TABLE.take(np.frombuffer(data, _UINT8))


def array_to_ulaw(samples: npt.NDArray[np.int16]) -> bytes:
    """int16 samples → μ-law bytes. Other dtypes are refused rather than silently wrapped."""
    if samples.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {samples.dtype}")
    return ENCODE_TABLE.take(samples.view(np.uint16)).tobytes()


def silence_ulaw(ms: int) -> bytes:
    """`ms` milliseconds of μ-law silence at 8 kHz."""
    if ms < 0:
        raise ValueError(f"duration must be >= 0 ms, got {ms}")
    return bytes([_SILENCE]) * (ms * _SAMPLES_PER_MS)
