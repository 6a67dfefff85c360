"""`make bench`: every benchmark, written to bench/results/latest.json, with a short table.

Sections: codec (G.711 per 20 ms frame against audioop), latency (voice-to-voice at the caller's ear,
engine against a sequential pipeline), capacity (concurrent calls per core), functions (Lambda cold
init and warm handler time) and providers (the latency and CPU each provider adapter adds, knowledge
search time). `python -m bench latency codec` runs a subset; `vad` (docs/vad.md) on request.
Numbers depend on the machine: latest.json records which one.
"""

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.logs import platform_output_to

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = ("codec", "latency", "capacity", "functions", "providers")
KNOWN = (*DEFAULT, "vad")


def _row(name: str, value: Any, target: str = "") -> str:
    return f"  {name:<34} {value!s:>12}  {target}"


def table(results: dict[str, Any]) -> list[str]:
    lines = []
    if codec := results.get("codec"):
        lines += [
            "codec (per 20 ms frame; ratio = audioop time / ours, > 1 is faster)",
            _row("decode vs audioop", f"{codec['decode_vs_audioop']:.2f}x", "target >= 1"),
            _row("encode vs audioop", f"{codec['encode_vs_audioop']:.2f}x", "target >= 1"),
            _row("encode vs audioop (1 s of TTS)", f"{codec['encode_vs_audioop_per_second']:.2f}x"),
        ]
    if latency := results.get("latency"):
        lines += [
            f"latency (reference profile, {latency['turns']} turns, at the caller's ear)",
            _row("voice-to-voice p50", f"{latency['v2v_ms_p50']} ms", "target <= 700 ms"),
            _row("voice-to-voice p95", f"{latency['v2v_ms_p95']} ms"),
            _row("engine overhead p95", f"{latency['overhead_ms_p95']} ms", "target <= 25 ms"),
            _row("sequential pipeline p50", f"{latency['naive_v2v_ms_p50']} ms"),
            _row("speed-up at p50", f"{latency['speedup_p50']}x", "target >= 2x"),
        ]
    if capacity := results.get("capacity"):
        lines += [
            "capacity (one process on one core, real codec/VAD/framing, simulated providers)",
            _row("calls per core", capacity["calls_per_core"], "target >= 200"),
            _row("inbound frame lag p99", f"{capacity['frame_lag_ms_p99']} ms", "target < 20 ms"),
            _row("lost frames", capacity["lost_frames"], "target 0"),
            _row("memory per call", f"{capacity['memory_mb_per_call']} MB", "target <= 5 MB"),
        ]
    if functions := results.get("functions"):
        lines.append(f"functions (cold: fresh process; import boto3 alone: {functions['baseline_import_boto3_ms']} ms)")
        for name, numbers in functions.items():
            if isinstance(numbers, dict):
                lines.append(
                    _row(
                        name,
                        f"{numbers['import_ms'] + numbers['init_ms']:.0f} ms cold",
                        f"warm p50 {numbers['warm_ms_p50']} ms, p95 {numbers['warm_ms_p95']} ms "
                        f"(one moto round trip {numbers['aws_round_trip_ms_p50']} ms)",
                    )
                )
    if providers := results.get("providers"):
        lines += _providers_rows(providers)
    if vad := results.get("vad"):
        lines.append(f"vad: see docs/vad.md ({len(vad)} result groups)")
    return lines


def _providers_rows(providers: dict[str, Any]) -> list[str]:
    transcribe, polly, espeak, sphinx = (providers[name] for name in ("transcribe", "polly", "espeak", "pocketsphinx"))
    knowledge = providers["knowledge"]

    def pair(numbers: dict[str, Any], key: str, high: str = "p95") -> str:
        return f"{numbers[f'{key}_p50']:.2f}/{numbers[f'{key}_{high}']:.2f} ms"

    def cpu(numbers: dict[str, Any]) -> str:
        return f"CPU {numbers['cpu_s_per_call_minute']:.3f} s per call-minute"

    return [
        "providers (ms p50/p95 added between the provider's bytes and ours out; real clients, local doubles)",
        _row("transcribe result added", pair(transcribe, "result_added_ms"), cpu(transcribe)),
        _row(
            "transcribe frame wait",
            pair(transcribe, "audio_wait_ms"),
            f"{transcribe.get('audio_event_ms', '?')} ms AudioEvents; "
            f"once its event is full: {pair(transcribe, 'audio_wait_after_chunk_ms')}",
        ),
        _row("polly chunk added", pair(polly, "chunk_added_ms"), cpu(polly)),
        _row("openai token added", pair(providers["openai"], "token_added_ms"), cpu(providers["openai"])),
        _row("bedrock token added", pair(providers["bedrock"], "token_added_ms"), cpu(providers["bedrock"])),
        _row("espeak first chunk", pair(espeak, "first_chunk_ms"), cpu(espeak)),
        _row("pocketsphinx real-time factor", sphinx["real_time_factor"], cpu(sphinx)),
        _row("knowledge search, clinic p50/p99", pair(knowledge, "clinic_ms", "p99")),
        _row(
            f"knowledge search, {knowledge['synthetic_500_passages']} passages",
            pair(knowledge, "synthetic_500_ms", "p99"),
            f"CPU {pair(knowledge, 'synthetic_500_cpu_ms', 'p99')}",
        ),
    ]


def main(sections: list[str]) -> int:
    # The platform's own JSON logs and metrics go to a file; the table goes to the terminal.
    log_file = os.path.join(tempfile.gettempdir(), "switchboard-bench.log")
    terminal = platform_output_to(log_file)
    # A Lambda handler that records no metric in a request makes Powertools warn; harmless here.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    results: dict[str, Any] = {}
    path = RESULTS / "latest.json"
    if path.exists():
        # A subset run keeps the other sections' last numbers.
        results = json.loads(path.read_text())
    for section in sections:
        print(f"running {section}...", file=sys.stderr, flush=True)
        started = time.monotonic()
        results[section] = importlib.import_module(f"bench.{section}").run()
        print(f"  {section}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    results["machine"] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "sections_run": sections,
    }
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print("\n".join(table(results)), file=terminal)
    print(f"written to {path}; the platform's logs: {log_file}", file=terminal)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(KNOWN)} (default: {' '.join(DEFAULT)})")
    args = parser.parse_args()
    unknown = sorted(set(args.sections) - set(KNOWN))
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(KNOWN)}")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    sys.exit(main(args.sections or list(DEFAULT)))
