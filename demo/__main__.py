"""`make demo`: whole calls through the platform on this machine, with no accounts.

Each call goes the way a real one does: Twilio's signed voice webhook → TwiML <Connect><Stream> with a
per-call token → the simulated Twilio media stream on the real media server and call engine (simulated
STT/LLM/TTS with the reference latency profile) → tool calls through the real tool-actions function →
stream-ended and status callbacks → the call record in DynamoDB (moto), read back with GET /calls/{sid}.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import warnings
from typing import Any

from tests.support.logs import platform_output_to

LOG_FILE = os.path.join(tempfile.gettempdir(), "switchboard-demo.log")
# The platform logs JSON lines and EMF metrics to stdout, as it does in Lambda and on Fargate. The demo
# moves that stdout to a file, before the platform is imported, and prints the calls on the terminal.
terminal = platform_output_to(LOG_FILE)
# A Lambda handler that records no metric in a request makes Powertools warn; harmless here.
warnings.filterwarnings("ignore", message="No application metrics to publish")

# Imported after the redirect on purpose: the platform's loggers take stdout as they are created.
from streaming.providers.simulated import LatencyProfile  # noqa: E402
from streaming.simulator import shipped_scenarios  # noqa: E402
from tests.support.deployment import LocalCall, LocalDeployment  # noqa: E402

DEFAULT_SCENARIOS = ("book-appointment", "barge-in", "drop-and-resume")


def say(*parts: object) -> None:
    print(*parts, file=terminal)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def show(call: LocalCall) -> None:
    timeline: dict[str, Any] = call.timeline
    record = timeline["call"]
    say(f"\n=== {call.scenario}: {call.call_sid} ({record['agent_id']}, {record['direction']}) ===")
    events: list[tuple[str, str]] = []
    for turn in timeline.get("turns", []):
        who = "caller" if turn["role"] == "user" else "agent "
        text = turn["text"]
        if turn.get("interrupted"):
            text = f"{turn.get('heard_text') or ''} [interrupted; the caller did not hear the rest]"
        # By when a turn ended: an agent turn that called a tool ends after the tool's result.
        events.append((turn["ended_at"], f"  {who}: {text}"))
    for tool in timeline.get("tools", []):
        events.append((tool["requested_at"], f"  tool  : {tool['tool']}({tool['arguments']}) -> {tool['outcome']}"))
    for _, line in sorted(events):
        say(line)
    statuses = " → ".join(event["status"] for event in record.get("status_history", []))
    say(f"  status: {statuses}; conversation ended: {record.get('conversation_ended') or '-'}")
    say(f"  streams: {call.report.streams}; clears: {call.report.clears}; barge-ins: {len(call.report.barge_ins)}")
    for turn in call.turns:
        if turn.kind != "reply":
            continue
        say(
            f"  turn {turn.turn}: voice-to-voice {_ms(turn.v2v_ms)} (endpointing {_ms(turn.endpointing_wait_ms)}, "
            f"{turn.end_of_turn_reason or '-'}{', speculative' if turn.speculative else ''}"
            f"{', interrupted' if turn.interrupted else ''})"
        )
    heard = [f"{v:.0f}" for v in call.report.v2v_ms]
    say(f"  at the caller's ear, voice-to-voice per reply (ms): {', '.join(heard) or '-'}")


async def main(scenarios: list[str]) -> int:
    say("Starting the platform on this machine: redis-server, moto (DynamoDB, Secrets Manager, EventBridge,")
    say("Scheduler), a Twilio REST stand-in, the media server with the call engine, the Lambda handlers.")
    async with LocalDeployment(profile=LatencyProfile.reference()) as deployment:
        for name in scenarios:
            say(f"\nCalling the {deployment.scenarios[name].agent} with the '{name}' scenario...")
            show(await deployment.inbound_call(name))
    say(f"\nThe platform's own logs and metrics (JSON, as CloudWatch gets them): {LOG_FILE}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"default: {' '.join(DEFAULT_SCENARIOS)}")
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(shipped_scenarios())
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; shipped: {sorted(shipped_scenarios())}")
    sys.exit(asyncio.run(main(args.scenarios or list(DEFAULT_SCENARIOS))))
