"""G.711 μ-law codec speed: ours against `audioop` (the C reference), per 20 ms frame and per 1 s block.

Per frame is what matters: the media service decodes each inbound 20 ms frame as it arrives. The
alternatives measured on the way to the chosen implementations are reported too, so the choice can be
re-checked on another machine or numpy version. Ratios are audioop's time / ours: > 1 means we are faster.

    .venv/bin/python -m bench.codec
"""

import codecs
import functools
import json
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np

from streaming.audio import codec, synth

RESULTS: Final = Path(__file__).parent / "results" / "codec.json"
_ROUNDS: Final = 5


def _load_audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    return audioop


def _ns_per_call(functions: dict[str, Callable[[], object]], rounds: int = _ROUNDS) -> dict[str, float]:
    """ns per call of each function: the best of several short runs, taken in turns (round-robin), so a
    burst of other work on the machine hits every contender alike instead of one of them."""
    timers = {name: timeit.Timer(function) for name, function in functions.items()}
    numbers = {name: timer.autorange()[0] for name, timer in timers.items()}
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, timer in timers.items():
            best[name] = min(best[name], min(timer.repeat(repeat=3, number=numbers[name])) / numbers[name] * 1e9)
    return best


def _decode_alternatives() -> dict[str, Callable[[bytes], bytes]]:
    """Decoders that were tried for 160-byte frames; the chosen one is codec.ulaw_to_pcm16."""
    table = codec.DECODE_TABLE.astype("<i2")
    pairs = [table[i : i + 1].tobytes() for i in range(256)]
    low = bytes(int(v) & 0xFF for v in table.view("<u2"))
    high = bytes(int(v) >> 8 for v in table.view("<u2"))
    uint8 = np.dtype(np.uint8)

    def numpy_take(data: bytes) -> bytes:
        return table.take(np.frombuffer(data, uint8)).tobytes()

    def translate_interleave(data: bytes) -> bytes:
        out = bytearray(2 * len(data))
        out[0::2] = data.translate(low)
        out[1::2] = data.translate(high)
        return bytes(out)

    def join_pairs(data: bytes) -> bytes:
        return b"".join(map(pairs.__getitem__, data))

    return {
        "charmap_utf16_translate (chosen)": codec.ulaw_to_pcm16,
        "numpy_take": numpy_take,
        "translate_interleave": translate_interleave,
        "join_pairs": join_pairs,
    }


def _encode_alternatives() -> dict[str, Callable[[bytes], bytes]]:
    """Encoders that were tried; the chosen one is codec.pcm16_to_ulaw."""
    table = codec.ENCODE_TABLE
    table_bytes = table.tobytes()
    uint16 = np.dtype("<u2")

    def numpy_fancy_index(data: bytes) -> bytes:
        return table[np.frombuffer(data, uint16)].tobytes()

    def map_bytes(data: bytes) -> bytes:
        return bytes(map(table_bytes.__getitem__, memoryview(data).cast("H")))

    return {
        "numpy_take (chosen)": codec.pcm16_to_ulaw,
        "numpy_fancy_index": numpy_fancy_index,
        "map_bytes": map_bytes,
    }


def run() -> dict[str, Any]:
    audioop = _load_audioop()
    speech = synth.voiced(1000, seed=7).astype("<i2")
    pcm_block = speech.tobytes()
    ulaw_block = codec.pcm16_to_ulaw(pcm_block)
    pcm_frame = pcm_block[: codec.FRAME_BYTES_PCM]
    ulaw_frame = ulaw_block[: codec.FRAME_BYTES_ULAW]
    for alternative in _decode_alternatives().values():
        assert alternative(ulaw_frame) == audioop.ulaw2lin(ulaw_frame, 2)
    for alternative in _encode_alternatives().values():
        assert alternative(pcm_frame) == audioop.lin2ulaw(pcm_frame, 2)

    results: dict[str, Any] = {}
    for size, pcm, ulaw in (("frame", pcm_frame, ulaw_frame), ("second", pcm_block, ulaw_block)):
        # functools.partial for both sides: the same (C-level) call overhead for ours and audioop.
        timings = _ns_per_call(
            {
                f"decode_ns_per_{size}": functools.partial(codec.ulaw_to_pcm16, ulaw),
                f"audioop_decode_ns_per_{size}": functools.partial(audioop.ulaw2lin, ulaw, 2),
                f"encode_ns_per_{size}": functools.partial(codec.pcm16_to_ulaw, pcm),
                f"audioop_encode_ns_per_{size}": functools.partial(audioop.lin2ulaw, pcm, 2),
            }
        )
        results.update(timings)
    results["decode_vs_audioop"] = results["audioop_decode_ns_per_frame"] / results["decode_ns_per_frame"]
    results["encode_vs_audioop"] = results["audioop_encode_ns_per_frame"] / results["encode_ns_per_frame"]
    results["decode_vs_audioop_per_second"] = results["audioop_decode_ns_per_second"] / results["decode_ns_per_second"]
    results["encode_vs_audioop_per_second"] = results["audioop_encode_ns_per_second"] / results["encode_ns_per_second"]
    results["decode_alternatives_ns_per_frame"] = _ns_per_call(
        {name: functools.partial(function, ulaw_frame) for name, function in _decode_alternatives().items()}
    )
    results["encode_alternatives_ns_per_frame"] = _ns_per_call(
        {name: functools.partial(function, pcm_frame) for name, function in _encode_alternatives().items()}
    )
    results["environment"] = {"numpy": np.__version__, "charmap_decode": codecs.charmap_decode.__module__}
    return results


def main() -> None:
    results = run()
    print(f"{'per call':<28}{'ours ns':>12}{'audioop ns':>12}{'audioop/ours':>14}")
    for size, label in (("frame", "20 ms frame (160 samples)"), ("second", "1 s block (8000 samples)")):
        for direction in ("decode", "encode"):
            ours = results[f"{direction}_ns_per_{size}"]
            reference = results[f"audioop_{direction}_ns_per_{size}"]
            print(f"{direction + ' ' + label:<28}{ours:>12.0f}{reference:>12.0f}{reference / ours:>14.2f}")
    for direction in ("decode", "encode"):
        print(f"\n{direction} alternatives, ns per 20 ms frame:")
        for name, ns in results[f"{direction}_alternatives_ns_per_frame"].items():
            print(f"  {name:<36}{ns:>8.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
