"""Concurrent calls per core: the most simulated calls one media-server process pinned to one core holds
with p99 inbound-frame lag under 20 ms and no audio lost or reordered.

The server (bench/capacity_server.py) runs the real engine, codec, VAD and framing with the simulated
providers (reference profile), the state on a real redis-server and the records on moto's server. The
callers are the Twilio call simulator, in this process on the other cores, each playing the `latency`
scenario (ten question-and-answer turns) in real time. Levels go up until one fails.

Inbound-frame lag is the engine's own measure: how late each media frame is processed against the time
its timestamp says it was sent (streaming/call.py CallOutcome). Lost frames: frames the simulator sent
that the engine did not process. Reordered or lost outbound audio: the simulator's mark checks.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import uvloop

from bench.latency import percentile
from streaming.simulator import CallReport, load_scenario, run_call
from switchboard.call import Call, CallDirection
from switchboard.records import CallRecords, table_definition
from switchboard.stream_token import StreamTokenSigner
from tests.support.deployment import REPO
from tests.support.moto_server import running_moto_process
from tests.support.net import free_port
from tests.support.redis_server import running_redis_server

LEVELS = (100, 200, 300, 400)
SCENARIO = "latency"
AGENT = "clinic-receptionist"
AUTH_TOKEN = "capacity-bench-auth-token"
PUBLIC_STREAM_URL = "wss://media.switchboard.test/media"
CALLS_TABLE = "switchboard-calls"
MAX_LAG_MS = 20.0
SERVER_CORE = 0


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _level(
    calls: int,
    *,
    url: str,
    tokens: StreamTokenSigner,
    records: CallRecords,
    outcomes: Path,
    pid: int,
    idle_rss: int,
) -> dict[str, Any]:
    outcomes.write_text("")
    scenario = load_scenario(SCENARIO)
    sids = ["CA" + os.urandom(16).hex() for _ in range(calls)]
    now = datetime.now(UTC)
    await asyncio.gather(
        *(
            asyncio.to_thread(
                records.create_call,
                Call(
                    call_sid=sid,
                    direction=CallDirection.INBOUND,
                    from_number="+15550101234",
                    to_number="+15550100200",
                    agent_id=AGENT,
                    created_at=now,
                ),
            )
            for sid in sids
        )
    )
    # Against the server's RSS before its first call: the allocator keeps what an earlier level used, so
    # measuring from the start of this level would credit this one with the last one's peak.
    peak_rss = _rss_kb(pid)
    stop = asyncio.Event()

    async def sample_memory() -> None:
        nonlocal peak_rss
        while not stop.is_set():
            peak_rss = max(peak_rss, _rss_kb(pid))
            await asyncio.sleep(0.5)

    async def one(index: int, sid: str) -> CallReport:
        # Calls arrive over two seconds, as a busy line's would, not all in one event-loop tick.
        await asyncio.sleep(2.0 * index / calls)
        parameters = {"token": tokens.issue(sid), "agent_id": AGENT, "scenario": SCENARIO}
        return await run_call(
            url,
            public_stream_url=PUBLIC_STREAM_URL,
            auth_token=AUTH_TOKEN,
            call_sid=sid,
            parameters=parameters,
            scenario=scenario,
        )

    sampler = asyncio.create_task(sample_memory())
    started = time.monotonic()
    reports = await asyncio.gather(*(one(i, sid) for i, sid in enumerate(sids)))
    elapsed = time.monotonic() - started
    stop.set()
    await sampler
    await asyncio.sleep(0.5)  # the last outcomes are written as the engines return
    by_sid = {}
    for line in outcomes.read_text().splitlines():
        outcome = json.loads(line)
        by_sid[outcome["call_sid"]] = outcome
    lags = [by_sid[sid]["frame_lag_p99_ms"] for sid in sids if sid in by_sid]
    lost = sum(max(0, report.frames_sent - by_sid.get(report.call_sid, {}).get("frames", 0)) for report in reports)
    return {
        "calls": calls,
        "completed": len(by_sid),
        "seconds": round(elapsed, 1),
        "frame_lag_ms_p99": round(percentile(lags, 99), 2),
        "frame_lag_ms_max_of_calls": round(max(lags, default=float("nan")), 2),
        "lost_frames": lost,
        "marks_lost": sum(report.marks_lost for report in reports),
        "marks_reordered": sum(report.marks_reordered for report in reports),
        # The callers' own lateness, which the server cannot tell from its own: a frame sent late arrives
        # late. Well under the lag limit, or the level measured the simulator rather than the server.
        "caller_send_lag_ms_p99": round(percentile([report.send_lag_p99_ms for report in reports], 99), 1),
        "caller_send_lag_ms_max": round(max(report.max_send_lag_ms for report in reports), 1),
        "v2v_ms_p50": round(percentile([v for report in reports for v in report.v2v_ms], 50), 1),
        "memory_mb_per_call": round((peak_rss - idle_rss) / 1024 / calls, 2),
    }


def _passed(level: dict[str, Any]) -> bool:
    return bool(
        level["completed"] == level["calls"]
        and level["frame_lag_ms_p99"] < MAX_LAG_MS
        and level["lost_frames"] == 0
        and level["marks_lost"] == 0
        and level["marks_reordered"] == 0
    )


async def measure(levels: tuple[int, ...] = LEVELS) -> dict[str, Any]:
    key = os.urandom(32).hex()
    port = free_port()
    # The callers, redis-server and moto stay off the server's core (children inherit this affinity).
    others = set(range(os.cpu_count() or 1)) - {SERVER_CORE}
    if others:
        os.sched_setaffinity(0, others)
    with (
        running_redis_server() as redis_url,
        running_moto_process() as aws_url,
        tempfile.TemporaryDirectory(prefix="switchboard-capacity-") as workdir,
    ):
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": aws_url,
            "REDIS_URL": redis_url,
            "CALLS_TABLE": CALLS_TABLE,
            "AGENTS_DIR": str(REPO / "agents"),
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "PUBLIC_STREAM_URL": PUBLIC_STREAM_URL,
            "STREAM_TOKEN_KEY": key,
            "PORT": str(port),
            "BENCH_OUTCOMES": str(Path(workdir) / "outcomes.jsonl"),
            "BENCH_CORE": str(SERVER_CORE),
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        os.environ.update(
            {
                k: env[k]
                for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
            }
        )
        boto3.client("dynamodb").create_table(**table_definition(CALLS_TABLE))
        records = CallRecords(CALLS_TABLE)
        log = (Path(workdir) / "server.log").open("w")
        server = subprocess.Popen([sys.executable, "-m", "bench.capacity_server"], env=env, stdout=log, stderr=log)
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(200):
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the capacity server did not start: see its log")
            results = []
            tokens = StreamTokenSigner(key.encode())
            idle_rss = _rss_kb(server.pid)
            for calls in levels:
                level = await _level(
                    calls,
                    url=f"ws://127.0.0.1:{port}/media",
                    tokens=tokens,
                    records=records,
                    outcomes=Path(env["BENCH_OUTCOMES"]),
                    pid=server.pid,
                    idle_rss=idle_rss,
                )
                level["passed"] = _passed(level)
                results.append(level)
                print(json.dumps(level), file=sys.stderr)
                if not level["passed"]:
                    break
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    held = [level for level in results if level["passed"]]
    best = held[-1] if held else None
    return {
        "calls_per_core": best["calls"] if best else 0,
        "frame_lag_ms_p99": best["frame_lag_ms_p99"] if best else None,
        "lost_frames": best["lost_frames"] if best else None,
        "memory_mb_per_call": best["memory_mb_per_call"] if best else None,
        "caller_send_lag_ms_p99": best["caller_send_lag_ms_p99"] if best else None,
        "levels": results,
    }


def run() -> dict[str, Any]:
    # The callers on uvloop too, as the server: on asyncio's own loop the simulator itself falls behind
    # its 20 ms frame grid at a few hundred calls, and a late send counts as server lag.
    return uvloop.run(measure())


if __name__ == "__main__":
    levels = tuple(int(arg) for arg in sys.argv[1:]) or LEVELS
    print(json.dumps(uvloop.run(measure(levels)), indent=2))
