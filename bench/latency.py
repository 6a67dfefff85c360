"""Voice-to-voice latency at the caller's ear: the engine against a sequential pipeline, in the same run.

Both run the `latency` scenario (ten short question-and-answer turns) through the whole local platform
(tests/support/deployment.py) with the reference provider profile of GUIDE.md section 6: STT words
150 ms behind the audio and the final 150 ms after speech ends; LLM first token 350 ms then 80 tokens/s;
TTS first byte 120 ms, then faster than real time. v2v is measured by the simulator: from the end of
the caller's last voiced frame to the first sample of the reply playing at its ear.

`overhead_ms` is the engine's own time on the reply's critical path: v2v minus the providers' own time
and the endpointing wait (streaming/telemetry.py TurnReport documents the split), per reply turn.
"""

import asyncio
import statistics
from typing import Any

from bench.naive import NaiveEngine
from streaming.providers.simulated import LatencyProfile
from switchboard.agent import AgentDirectory
from tests.support.deployment import REPO, LocalDeployment

SCENARIO = "latency"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def measure(calls: int = 3, naive_calls: int = 1) -> dict[str, Any]:
    async with LocalDeployment(profile=LatencyProfile.reference()) as deployment:
        agents = AgentDirectory.load(REPO / "agents")
        naive_url = await deployment.start_media_server(lambda: NaiveEngine(agents, deployment.providers))
        ours: list[float] = []
        overhead: list[float] = []
        endpointing: list[float] = []
        for _ in range(calls):
            call = await deployment.inbound_call(SCENARIO)
            ours.extend(call.report.v2v_ms)
            for turn in call.turns:
                if turn.kind == "reply" and turn.overhead_ms is not None:
                    overhead.append(turn.overhead_ms)
                if turn.kind == "reply" and turn.endpointing_wait_ms is not None:
                    endpointing.append(turn.endpointing_wait_ms)
        naive: list[float] = []
        for _ in range(naive_calls):
            call = await deployment.inbound_call(SCENARIO, media_url=naive_url)
            naive.extend(call.report.v2v_ms)
    return {
        "turns": len(ours),
        "v2v_ms_p50": round(percentile(ours, 50), 1),
        "v2v_ms_p95": round(percentile(ours, 95), 1),
        "overhead_ms_p95": round(percentile(overhead, 95), 1),
        "endpointing_ms_p50": round(percentile(endpointing, 50), 1),
        "naive_turns": len(naive),
        "naive_v2v_ms_p50": round(percentile(naive, 50), 1),
        "naive_v2v_ms_p95": round(percentile(naive, 95), 1),
        "speedup_p50": round(statistics.median(naive) / statistics.median(ours), 2) if ours and naive else None,
        "profile": LatencyProfile.reference().model_dump(),
    }


def run() -> dict[str, Any]:
    return asyncio.run(measure())


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
