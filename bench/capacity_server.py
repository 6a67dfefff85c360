"""The media server process of the capacity benchmark: pinned to one core, real engine, simulated providers.

Started by bench/capacity.py with its settings in the environment; writes one JSON line per finished call
(the engine's CallOutcome: frames processed, inbound frame lag) to BENCH_OUTCOMES, and its peak RSS on exit.
"""

import asyncio
import dataclasses
import json
import os
import signal
from pathlib import Path

import redis.asyncio as aioredis
import uvicorn

from streaming.call import CallEngine, EngineDeps
from streaming.protocol import StartInfo
from streaming.providers.simulated import LatencyProfile, SimulatedProviders
from streaming.server import MediaServerApp, Services
from streaming.simulator import shipped_scenarios
from streaming.simulator.tools import ScriptedToolActions
from streaming.stream import MediaStream
from switchboard.agent import AgentDirectory
from switchboard.records import CallRecords
from switchboard.state import CallStateStore
from switchboard.stream_token import StreamTokenSigner
from switchboard.twilio_signature import TwilioSignature


class RecordingEngine:
    """The real engine; its outcome of each call is appended to the outcomes file."""

    def __init__(self, engine: CallEngine, outcomes: Path) -> None:
        self._engine = engine
        self._outcomes = outcomes

    async def run(self, stream: MediaStream, start: StartInfo) -> object:
        outcome = await self._engine.run(stream, start)
        with self._outcomes.open("a") as out:
            out.write(json.dumps(dataclasses.asdict(outcome), default=str) + "\n")
        return outcome


async def serve() -> None:
    outcomes = Path(os.environ["BENCH_OUTCOMES"])
    redis = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    deps = EngineDeps(
        agents=AgentDirectory.load(Path(os.environ["AGENTS_DIR"])),
        providers=SimulatedProviders(shipped_scenarios(), LatencyProfile.reference()),
        tools=ScriptedToolActions(),
        store=CallStateStore(redis),
        records=CallRecords(os.environ["CALLS_TABLE"]),
        owner=f"capacity-{os.getpid()}",
    )
    services = Services(
        signature=TwilioSignature(os.environ["TWILIO_AUTH_TOKEN"], public_stream_url=os.environ["PUBLIC_STREAM_URL"]),
        tokens=StreamTokenSigner(os.environ["STREAM_TOKEN_KEY"].encode()),
        redis=redis,
        engine_factory=lambda: RecordingEngine(CallEngine(deps), outcomes),
        drain_seconds=0,
    )
    config = uvicorn.Config(
        MediaServerApp(services),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        ws="websockets-sansio",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
    await server.serve()
    await redis.aclose()


if __name__ == "__main__":
    # One process, one core: the capacity per core is what this process holds.
    os.sched_setaffinity(0, {int(os.environ.get("BENCH_CORE", "0"))})
    # The event loop the service runs on (uvicorn[standard] brings uvloop; streaming/__main__ uses it).
    import uvloop

    uvloop.run(serve())
