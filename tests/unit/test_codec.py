"""The μ-law codec against `audioop`, a reference nobody here wrote (stdlib on 3.12, audioop-lts later)."""

import warnings
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.audio import codec


def _load_audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    return audioop


audioop = _load_audioop()

ALL_CODES = bytes(range(256))
# Every 16-bit sample once, little-endian.
ALL_PCM = np.arange(65536, dtype=np.uint16).astype("<u2").tobytes()


def test_frame_constants() -> None:
    assert codec.FRAME_SAMPLES == codec.SAMPLE_RATE * codec.FRAME_MS // 1000 == 160
    assert codec.FRAME_BYTES_ULAW == 160
    assert codec.FRAME_BYTES_PCM == 320


def test_decode_is_bit_exact_for_every_code() -> None:
    assert codec.ulaw_to_pcm16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_decode_of_long_input_is_bit_exact_too() -> None:
    # Frames and long blocks take different decoding paths (see the codec's docstring).
    long_input = ALL_CODES * 8
    assert codec.ulaw_to_pcm16(long_input) == audioop.ulaw2lin(long_input, 2)


def test_encode_is_bit_exact_for_every_sample() -> None:
    assert codec.pcm16_to_ulaw(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)


def test_array_variants_agree_with_the_bytes_variants() -> None:
    samples = codec.ulaw_to_array(ALL_CODES)
    assert samples.dtype == np.int16
    assert samples.astype("<i2").tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    every_sample = np.frombuffer(ALL_PCM, dtype="<i2").astype(np.int16)
    assert codec.array_to_ulaw(every_sample) == audioop.lin2ulaw(ALL_PCM, 2)


def test_array_to_ulaw_accepts_a_strided_view() -> None:
    samples = np.arange(-1000, 1000, dtype=np.int16)[::3]
    assert codec.array_to_ulaw(samples) == audioop.lin2ulaw(samples.astype("<i2").tobytes(), 2)


def test_array_to_ulaw_refuses_other_dtypes() -> None:
    with pytest.raises(TypeError, match="int16"):
        codec.array_to_ulaw(np.zeros(4, dtype=np.int32))


def test_decode_accepts_a_frame_from_a_larger_buffer() -> None:
    buffer = bytearray(ALL_CODES)
    assert codec.ulaw_to_pcm16(bytes(memoryview(buffer)[10:170])) == audioop.ulaw2lin(ALL_CODES[10:170], 2)


@pytest.mark.parametrize("length", [1, 3, 321])
def test_odd_length_pcm_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        codec.pcm16_to_ulaw(b"\x00" * length)


def test_empty_input() -> None:
    assert codec.ulaw_to_pcm16(b"") == b""
    assert codec.pcm16_to_ulaw(b"") == b""
    assert codec.ulaw_to_array(b"").shape == (0,)
    assert codec.array_to_ulaw(np.zeros(0, dtype=np.int16)) == b""


def test_silence() -> None:
    assert codec.silence_ulaw(20) == b"\xff" * codec.FRAME_BYTES_ULAW
    assert codec.silence_ulaw(0) == b""
    assert codec.ulaw_to_pcm16(codec.silence_ulaw(20)) == b"\x00" * codec.FRAME_BYTES_PCM
    with pytest.raises(ValueError, match=">= 0"):
        codec.silence_ulaw(-1)


@given(st.binary(max_size=2048))
def test_ulaw_survives_decode_then_encode(data: bytes) -> None:
    # Every code decodes to a value that encodes back to itself, except 0x7F (-0), which is +0 again.
    assert codec.pcm16_to_ulaw(codec.ulaw_to_pcm16(data)) == data.replace(b"\x7f", b"\xff")


@given(st.lists(st.integers(-32768, 32767), max_size=1024))
def test_pcm_round_trip_stays_within_one_quantization_step(values: list[int]) -> None:
    samples = np.array(values, dtype=np.int16)
    decoded = codec.ulaw_to_array(codec.array_to_ulaw(samples)).astype(np.int32)
    error = np.abs(decoded - samples.astype(np.int32))
    # Half a quantization step (which doubles with each segment, so stays under |sample| / 16) plus the two
    # low bits G.711 drops before encoding and the bias near zero.
    allowed = np.abs(samples.astype(np.int32)) // 16 + 12
    assert np.all(error <= allowed)


@given(st.binary(max_size=1024).filter(lambda b: len(b) % 2 == 0))
def test_pcm_encode_matches_audioop_on_any_input(data: bytes) -> None:
    assert codec.pcm16_to_ulaw(data) == audioop.lin2ulaw(data, 2)


@given(st.binary(max_size=1024))
def test_decode_matches_audioop_on_any_input(data: bytes) -> None:
    assert codec.ulaw_to_pcm16(data) == audioop.ulaw2lin(data, 2)
