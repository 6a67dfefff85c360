"""`make demo`: whole calls through the platform on this machine, with no accounts.

Each call goes the way a real one does: Twilio's signed voice webhook → TwiML <Connect><Stream> with a
per-call token → the simulated Twilio media stream on the real media server and call engine → tool calls
through the real tool-actions function → stream-ended and status callbacks → the call record in DynamoDB
(moto), read back with GET /calls/{sid}.

The engines: `simulated` (the default) reads the scenario's script with the reference latency profile;
`offline` is real speech both ways, with nothing simulated in between: eSpeak NG says the caller's lines,
pocketsphinx hears them, the agent's scripted flow answers and eSpeak NG speaks the answer.
"""

import argparse
import asyncio
import contextlib
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
from streaming.simulator.scenario import Say  # noqa: E402
from tests.support.deployment import LocalCall, LocalDeployment, offline_caller_voice, offline_providers  # noqa: E402

DEFAULT_SCENARIOS = ("book-appointment", "barge-in", "drop-and-resume")
OFFLINE_SCENARIOS = ("spoken-call",)


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


async def main(scenarios: list[str], engines: str) -> int:
    say("Starting the platform on this machine: redis-server, moto (DynamoDB, Secrets Manager, EventBridge,")
    say("Scheduler), a Twilio REST stand-in, the media server with the call engine, the Lambda handlers.")
    offline = engines == "offline"
    if offline:
        say("Engines: offline. The caller's lines are spoken by eSpeak NG and heard by pocketsphinx (the caller")
        say("lines below are what it heard); the agent's scripted flow answers, spoken by eSpeak NG.")
    providers = await offline_providers() if offline else None
    deployment = LocalDeployment(
        profile=LatencyProfile.reference(), providers=providers, caller_voice=offline_caller_voice if offline else None
    )
    async with contextlib.AsyncExitStack() as stack:
        if providers is not None:
            stack.push_async_callback(providers.aclose)
        await stack.enter_async_context(deployment)
        for name in scenarios:
            scenario = deployment.scenarios[name]
            say(f"\nCalling the {scenario.agent} with the '{name}' scenario...")
            if offline:
                said = [step.say for step in scenario.steps if isinstance(step, Say)]
                say("  the caller says: " + " / ".join(said))
            show(await deployment.inbound_call(name))
    say(f"\nThe platform's own logs and metrics (JSON, as CloudWatch gets them): {LOG_FILE}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    defaults = f"default: {' '.join(DEFAULT_SCENARIOS)} (offline: {' '.join(OFFLINE_SCENARIOS)})"
    parser.add_argument("scenarios", nargs="*", help=defaults)
    parser.add_argument("--engines", choices=("simulated", "offline"), default="simulated")
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(shipped_scenarios())
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; shipped: {sorted(shipped_scenarios())}")
    default = OFFLINE_SCENARIOS if args.engines == "offline" else DEFAULT_SCENARIOS
    sys.exit(asyncio.run(main(args.scenarios or list(default), args.engines)))
