"""Whole calls through the platform: Twilio's signed webhook → TwiML → the simulated media stream on the real
media server and engine → tool calls through the real tool-actions function → stream-ended and status
callbacks → the call record in DynamoDB, read back through GET /calls/{sid}. AWS is moto's server, Twilio
REST the local stub, Redis a real server (tests/support/deployment.py)."""

from collections.abc import AsyncIterator
from typing import Any

import boto3
import pytest

from streaming.providers.simulated import LatencyProfile
from tests.support.deployment import (
    APPOINTMENTS_TABLE,
    LocalCall,
    LocalDeployment,
    offline_caller_voice,
    offline_providers,
)

# Providers answer at once and the caller talks four times faster than real time: the engine keeps its
# timing on the audio stream's clock, so the conversation is the same, only quicker to test.
SPEED = 4.0


@pytest.fixture
async def deployment() -> AsyncIterator[LocalDeployment]:
    async with LocalDeployment(profile=LatencyProfile.instant()) as running:
        yield running


def _turns(call: LocalCall) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = call.timeline["turns"]
    return turns


def _assert_contiguous(call: LocalCall) -> None:
    indexes = [turn["index"] for turn in _turns(call)]
    assert indexes == list(range(len(indexes))), "turns have a gap or a duplicate"


async def test_a_booking_call_from_webhook_to_record(deployment: LocalDeployment) -> None:
    call = await deployment.inbound_call("book-appointment", speed=SPEED)

    record = call.timeline["call"]
    assert record["status"] == "completed"
    assert record["conversation_ended"] == "agent_ended"
    assert [event["status"] for event in record["status_history"]] == ["in-progress", "completed"]
    _assert_contiguous(call)
    roles = [turn["role"] for turn in _turns(call)]
    assert roles[0] == "assistant"  # the greeting
    assert roles.count("user") == 3
    assert "book an appointment" in _turns(call)[1]["text"]
    tools = {tool["tool"]: tool for tool in call.timeline["tools"]}
    assert tools["book_appointment"]["outcome"] == "succeeded"
    assert tools["end_call"]["outcome"] == "succeeded"
    # The slot is taken in the appointments table, by this caller.
    slots = boto3.client("dynamodb").scan(TableName=APPOINTMENTS_TABLE)["Items"]
    assert any(item.get("call_sid", {}).get("S") == call.call_sid for item in slots)
    # The agent closed the stream; Twilio's <Connect action> was answered with a hang-up.
    assert call.report.ended_by == "agent"
    assert "<Hangup" in call.twiml[-1]
    assert call.report.marks_lost == 0
    assert call.report.marks_reordered == 0


async def test_a_dropped_stream_resumes_the_same_conversation(deployment: LocalDeployment) -> None:
    call = await deployment.inbound_call("drop-and-resume", speed=SPEED)

    assert call.report.streams == 2
    assert call.timeline["call"]["stream_resumes"] == 1
    _assert_contiguous(call)
    greetings = [turn for turn in _turns(call) if "Thank you for calling" in turn["text"]]
    assert len(greetings) == 1, "the resumed stream must not greet again"
    assert sum(turn["role"] == "user" for turn in _turns(call)) == 4


async def test_a_barge_in_keeps_only_what_the_caller_heard(deployment: LocalDeployment) -> None:
    call = await deployment.inbound_call("barge-in", speed=SPEED)

    interrupted = [turn for turn in _turns(call) if turn.get("interrupted")]
    assert interrupted, "the caller's barge-in interrupted no turn"
    for turn in interrupted:
        assert turn["role"] == "assistant"
        heard = turn.get("heard_text") or ""
        assert len(heard) < len(turn["text"])
        assert turn["text"].startswith(heard.rstrip(". "))
    assert call.report.clears >= 1
    _assert_contiguous(call)


async def test_forged_webhooks_and_streams_write_nothing(deployment: LocalDeployment) -> None:
    from tests.support.apigw import twilio_form_event
    from tests.support.twilio_stub import ACCOUNT_SID

    form = {"AccountSid": ACCOUNT_SID, "CallSid": "CA" + "f" * 32, "From": "+15550101234", "To": "+15550100200"}
    forged = twilio_form_event(
        "/twilio/voice", form, auth_token="not-the-token", public_url="https://api.switchboard.test/prod/twilio/voice"
    )
    response = await deployment.invoke("voice", forged)
    assert response["statusCode"] == 403
    assert deployment.records().get_call("CA" + "f" * 32) is None


async def test_a_call_on_the_offline_engines_speech_both_ways() -> None:
    """Nothing simulated between the two voices: eSpeak NG says the caller's lines, pocketsphinx hears them,
    the agent's scripted flow answers and eSpeak NG speaks. pocketsphinx hears phone-band eSpeak roughly
    (tests/integration/test_offline_engines.py), so this checks the path, not the words."""
    providers = await offline_providers()
    offline = LocalDeployment(profile=LatencyProfile.instant(), providers=providers, caller_voice=offline_caller_voice)
    try:
        async with offline as run:
            call = await run.inbound_call("spoken-call")
    finally:
        await providers.aclose()

    record = call.timeline["call"]
    assert record["status"] == "completed"
    _assert_contiguous(call)
    turns = _turns(call)
    assert turns[0]["role"] == "assistant"
    assert "Thank you for calling" in turns[0]["text"]
    heard = [turn["text"] for turn in turns if turn["role"] == "user"]
    assert heard, "pocketsphinx heard nothing of the caller"
    assert all(text.strip() for text in heard)
    # Every caller turn was answered by the flow, out loud: an agent turn follows the first caller turn.
    assert any(
        turn["role"] == "assistant" for turn in turns[turns.index(next(t for t in turns if t["role"] == "user")) :]
    )
    assert len(call.report.v2v_ms) >= 1  # the caller heard a reply
