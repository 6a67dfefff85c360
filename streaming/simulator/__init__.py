"""The Twilio call simulator: the caller's side of a Media Stream, scripted by a Scenario.

    report = await run_call("ws://127.0.0.1:8080/media", public_stream_url="wss://media.example.com/media",
                            auth_token=token, call_sid=sid, parameters={"token": t, "scenario": "barge-in"},
                            scenario=load_scenario("barge-in"))

See README.md for the scenario format and what the report measures.
"""

from streaming.simulator.call import run_call, stream_signature
from streaming.simulator.report import BargeIn, CallerStepReport, CallReport, TurnAtEar
from streaming.simulator.scenario import (
    SOUND_RUNS_PARAMETER,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)

__all__ = [
    "SOUND_RUNS_PARAMETER",
    "BargeIn",
    "CallReport",
    "CallerStepReport",
    "Scenario",
    "ScenarioError",
    "TurnAtEar",
    "load_scenario",
    "parse_scenario",
    "run_call",
    "shipped_scenarios",
    "stream_signature",
]
