"""The simulated providers: STT aligned to caller energy on audio time, the scripted LLM, the TTS."""

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest

from streaming.audio.codec import FRAME_BYTES_PCM, pcm16_to_ulaw, ulaw_to_array, ulaw_to_pcm16
from streaming.audio.level import db_to_gain, pcm16_dbfs
from streaming.providers.base import TextDelta, ToolCall, Transcript
from streaming.providers.simulated import (
    LatencyProfile,
    ScriptCursor,
    SimulatedLanguageModel,
    SimulatedProviders,
    SimulatedSpeechSession,
    SimulatedTextToSpeech,
    SimulationStats,
    UnknownScenario,
    chunk_delay_s,
    final_text,
    frame_is_loud,
    partial_text,
    speech_audio,
    speech_ms,
    token_delay_s,
    tokens,
)
from streaming.simulator.scenario import SOUND_RUNS_PARAMETER, Scenario, load_scenario
from streaming.simulator.tools import ScriptedToolActions
from streaming.simulator.voice import render
from streaming.tools import ToolActions
from switchboard.agent import Voice, load_agent
from switchboard.state import ChatMessage
from switchboard.tool import ToolName, ToolOutcome, ToolResult

REPO = Path(__file__).resolve().parents[2]
AGENT = load_agent(REPO / "agents" / "clinic-receptionist.yaml")
VOICE = Voice(id="Joanna")


def _scenario(steps: list[dict[str, object]], **fields: object) -> Scenario:
    return Scenario.model_validate({"name": "t", "steps": steps, **fields})


def _caller_audio(scenario: Scenario, gaps_ms: list[int]) -> bytes:
    """The scenario's sounds as the simulator renders them, as PCM16, with `gaps_ms` of silence before each."""
    parts: list[bytes] = []
    sounds = [(i, s) for i in range(len(scenario.steps)) if (s := scenario.sound(i)) is not None]
    for gap, (index, sound) in zip(gaps_ms, sounds, strict=True):
        parts.append(b"\xff" * gap * 8)
        parts.append(render(sound, f0=120.0, level_dbfs=-20.0, seed=scenario.seed(index)))
    parts.append(b"\xff" * 2000 * 8)
    return ulaw_to_pcm16(b"".join(parts))


async def _transcribe(
    scenario: Scenario, gaps_ms: list[int], profile: LatencyProfile, first_run: int = 0
) -> list[tuple[int, Transcript]]:
    """Feed the audio frame by frame; each transcript with the audio position (ms) at which it came out."""
    session = SimulatedSpeechSession(ScriptCursor(scenario.sound_runs(), first_run), profile, SimulationStats())
    received: list[tuple[int, Transcript]] = []
    position = 0

    async def consume() -> None:
        async for transcript in session.transcripts():
            received.append((position, transcript))

    consumer = asyncio.create_task(consume())
    pcm = _caller_audio(scenario, gaps_ms)
    for offset in range(0, len(pcm), FRAME_BYTES_PCM):
        await session.send_audio(pcm[offset : offset + FRAME_BYTES_PCM])
        position += 20
        await asyncio.sleep(0)
    await session.aclose()
    await consumer
    return received


# -- STT --------------------------------------------------------------------------------------------------


async def test_words_appear_word_lag_after_they_end_in_the_audio() -> None:
    scenario = _scenario([{"say": "Can I come on Tuesday?"}])
    profile = LatencyProfile.reference()
    received = await _transcribe(scenario, [500], profile)

    [run] = scenario.sound_runs()
    partials = [(at, t) for at, t in received if not t.is_final]
    assert [t.text for _, t in partials] == [
        "can",
        "can i",
        "can i come",
        "can i come on",
        "can i come on tuesday",
    ]
    for (at, transcript), word in zip(partials, run.words, strict=True):
        assert transcript.stable_text == transcript.text
        assert transcript.start_ms == 500  # the onset, in audio time
        assert transcript.end_ms == 500 + word.end_ms
        # Out with the first frame that reaches the word's end plus the lag.
        assert at == -(-(500 + word.end_ms + profile.stt_word_lag_ms) // 20) * 20
    at, final = received[-1]
    assert final.is_final
    assert final.text == final.stable_text == "can i come on tuesday?"
    assert (final.start_ms, final.end_ms) == (500, 500 + run.duration_ms)
    assert at == 500 + run.duration_ms + profile.stt_final_lag_ms + 20 - profile.stt_final_lag_ms % 20
    assert len({t.segment_id for _, t in received}) == 1


async def test_lags_follow_the_profile_on_audio_time() -> None:
    scenario = _scenario([{"say": "Hello there.", "duration_ms": 600}])
    profile = LatencyProfile(stt_word_lag_ms=40, stt_final_lag_ms=600)
    received = await _transcribe(scenario, [300], profile)
    final_at = [at for at, t in received if t.is_final]
    last_partial_at = [at for at, t in received if not t.is_final][-1]
    assert final_at == [300 + 600 + 600]
    assert last_partial_at == 300 + 600 + 40


async def test_a_long_pause_ends_the_segment_and_the_rest_is_a_new_one() -> None:
    scenario = _scenario([{"say": "I'd like to book… an appointment."}])
    received = await _transcribe(scenario, [200], LatencyProfile.instant())
    finals = [t for _, t in received if t.is_final]
    assert [t.text for t in finals] == ["i'd like to book.", "an appointment."]
    assert finals[0].segment_id != finals[1].segment_id
    _, second = scenario.sound_runs()
    assert finals[1].start_ms == 200 + second.offset_ms
    assert [t.text for _, t in received if t.segment_id == finals[1].segment_id] == [
        "an",
        "an appointment",
        "an appointment.",
    ]


async def test_a_short_pause_keeps_the_segment() -> None:
    scenario = _scenario([{"say": "five five five… zero one", "pause_ms": 500}])
    received = await _transcribe(scenario, [200], LatencyProfile.instant())
    assert [t.text for _, t in received if t.is_final] == ["five five five zero one."]
    assert len({t.segment_id for _, t in received}) == 1


async def test_noise_gives_no_text_and_alignment_holds_whatever_the_timing() -> None:
    scenario = _scenario(
        [{"say": "Where do I park, please?"}, {"noise": 150}, {"backchannel": "mm-hm"}, {"say": "Thanks, bye."}]
    )
    for gaps in ([300, 700, 400, 900], [2500, 300, 3000, 300]):
        received = await _transcribe(scenario, gaps, LatencyProfile.reference())
        finals = [t for _, t in received if t.is_final]
        assert [t.text for t in finals] == ["where do i park, please?", "mm-hm.", "thanks, bye."]
        assert finals[1].start_ms == sum(gaps[:3]) + sum(
            s.duration_ms for i in range(2) if (s := scenario.sound(i)) is not None
        )


async def test_a_resumed_stream_continues_with_the_next_utterance() -> None:
    scenario = _scenario([{"say": "First."}, {"say": "Second one."}])
    profile = LatencyProfile.instant()
    providers = SimulatedProviders({"t": scenario}, profile)
    call = providers.for_call(AGENT, {"scenario": "t", SOUND_RUNS_PARAMETER: "1"})
    session = await call.stt.start(language="en-US")
    out: list[Transcript] = []

    async def consume() -> None:
        async for transcript in session.transcripts():
            out.append(transcript)

    consumer = asyncio.create_task(consume())
    sound = scenario.sound(1)
    assert sound is not None
    pcm = ulaw_to_pcm16(b"\xff" * 1600 + render(sound, f0=120.0, level_dbfs=-20.0) + b"\xff" * 1600)
    for offset in range(0, len(pcm), FRAME_BYTES_PCM):
        await session.send_audio(pcm[offset : offset + FRAME_BYTES_PCM])
        await asyncio.sleep(0)
    await session.aclose()
    await consumer
    assert out[-1].is_final
    assert out[-1].text == "second one."
    assert out[-1].segment_id == "seg-1"


def test_transcript_text() -> None:
    assert partial_text(["Sorry,", "actually,", "I'd", "like", "Tuesday?"]) == "sorry actually i'd like tuesday"
    assert final_text(["Sorry,", "actually,", "Tuesday?"]) == "sorry, actually, tuesday?"
    assert final_text(["I'd", "like", "to", "book,"]) == "i'd like to book."
    assert final_text(["Mm-hm"]) == "mm-hm."


def test_caller_speech_is_loud_and_the_speakerphone_echo_is_not() -> None:
    sound = _scenario([{"say": "Tell me about parking."}]).sound(0)
    assert sound is not None
    caller = render(sound, f0=120, level_dbfs=-20)
    caller_frames = [ulaw_to_pcm16(caller[i : i + 160]) for i in range(0, len(caller), 160)]
    assert all(frame_is_loud(frame) for frame in caller_frames)
    agent = np.frombuffer(speech_audio("We are at 12 Maple Street, next to the pharmacy. " * 8), "<i2")
    echo = pcm16_to_ulaw((agent * db_to_gain(-30.0)).astype("<i2").tobytes())
    echo_frames = [ulaw_to_pcm16(echo[i : i + 160]) for i in range(0, len(echo), 160)]
    assert not any(frame_is_loud(frame) for frame in echo_frames)
    assert not frame_is_loud(bytes(FRAME_BYTES_PCM))


def test_unknown_scenario_is_a_clear_error() -> None:
    providers = SimulatedProviders({"barge-in": load_scenario("barge-in")}, LatencyProfile.instant())
    with pytest.raises(UnknownScenario, match=r"unknown scenario 'nope' \(simulated scenarios: barge-in\)"):
        providers.for_call(AGENT, {"scenario": "nope"})
    with pytest.raises(UnknownScenario, match="no 'scenario' parameter"):
        providers.for_call(AGENT, {"token": "x"})


# -- LLM --------------------------------------------------------------------------------------------------


def _user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


async def _collect(events: AsyncIterator[TextDelta | ToolCall]) -> list[TextDelta | ToolCall]:
    return [event async for event in events]


def test_tokens_are_word_pieces_of_at_most_four_characters() -> None:
    text = "Of course, Tuesday works. I have ten or eleven in the morning."
    pieces = tokens(text)
    assert "".join(pieces) == text
    assert all(len(piece.strip()) <= 4 for piece in pieces)
    assert pieces[:4] == ["Of", " cour", "se,", " Tues"]
    assert 1.2 <= len(pieces) / len(text.split()) <= 1.8


def test_token_and_chunk_schedules() -> None:
    reference = LatencyProfile.reference()
    assert token_delay_s(0, reference) == pytest.approx(0.350)
    assert token_delay_s(80, reference) == pytest.approx(1.350)
    assert chunk_delay_s(0, reference) == pytest.approx(0.120)
    assert chunk_delay_s(10, reference) == pytest.approx(0.120 + 10 * 0.1 / 2)
    fast = reference.scaled(10)
    assert token_delay_s(80, fast) == pytest.approx(0.135)
    assert fast.stt_word_lag_ms == reference.stt_word_lag_ms  # audio time: the fast clock scales it already
    assert token_delay_s(1000, LatencyProfile.instant()) == 0
    assert chunk_delay_s(1000, LatencyProfile.instant()) == 0


async def test_the_llm_follows_the_script_by_user_turn() -> None:
    stats = SimulationStats()
    scenario = load_scenario("book-appointment")
    llm = SimulatedLanguageModel(scenario.agent_replies, LatencyProfile.instant(), stats)
    system = ChatMessage(role="system", content="You are Ava.")
    greeting = ChatMessage(role="assistant", content="Thank you for calling.")

    first = await _collect(llm.reply([system, greeting, _user("i'd like to book an appointment")], []))
    assert "".join(e.text for e in first if isinstance(e, TextDelta)) == (
        "Of course. Which day and time would suit you, and may I have your name?"
    )
    history = [system, greeting, _user("book"), ChatMessage(role="assistant", content="Which day?"), _user("tuesday")]
    second = await _collect(llm.reply(history, []))
    [call] = second
    assert isinstance(call, ToolCall)
    # The scenario books "{next:tue}T10:00": next Tuesday, whenever the test runs.
    start = datetime.fromisoformat(json.loads(call.arguments)["start"])
    assert call.name == "book_appointment"
    assert (start.weekday(), start.hour) == (1, 10)
    assert 0 < (start.date() - date.today()).days <= 7
    tool_result = ChatMessage(role="tool", content="The appointment is booked.", tool_call_id=call.call_id)
    assistant_call = ChatMessage(role="assistant", tool_calls=[{"id": call.call_id}])
    after = await _collect(llm.reply([*history, assistant_call, tool_result], []))
    assert "".join(e.text for e in after if isinstance(e, TextDelta)).startswith("You're booked for Tuesday")
    third = await _collect(llm.reply([*history, _user("thanks bye")], []))
    assert isinstance(third[-1], ToolCall)
    assert third[-1].name == "end_call"
    assert "".join(e.text for e in third if isinstance(e, TextDelta)) == "You're welcome. Goodbye!"
    assert stats.llm_replies == stats.llm_replies_completed == 4
    assert llm.replies_cancelled == 0


async def test_without_a_script_the_llm_repeats_the_caller() -> None:
    llm = SimulatedLanguageModel(None, LatencyProfile.instant(), SimulationStats())
    events = await _collect(llm.reply([_user("what time do you open?")], []))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "You said: what time do you open?"
    assert llm.answer([_user("a"), _user("b")]) == ("You said: b", None)


async def test_a_closed_reply_stops_at_once_and_is_counted() -> None:
    stats = SimulationStats()
    llm = SimulatedLanguageModel(None, LatencyProfile.reference(), stats)
    # Closed while waiting for its first token (350 ms away): it must not hold the consumer.
    reply = llm.reply([_user("hello")], [])
    waiting = asyncio.create_task(anext(reply))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await reply.aclose()
    # Closed after a few tokens.
    instant = SimulatedLanguageModel(None, LatencyProfile.instant(), stats)
    partial = instant.reply([_user("one two three four five")], [])
    assert isinstance(await anext(partial), TextDelta)
    await partial.aclose()
    assert stats.llm_replies == 2
    assert stats.llm_replies_cancelled == 2
    assert llm.replies_cancelled == instant.replies_cancelled == 1
    assert stats.llm_replies_completed == 0


# -- TTS --------------------------------------------------------------------------------------------------


def test_speech_length_follows_the_text() -> None:
    assert speech_ms("Hi.") == 300
    assert speech_ms("   ") == 0
    text = "Thank you for calling Maple Street Clinic. This is Ava. How can I help you today?"
    assert speech_ms(text) == -(-len(text) * 65 // 20) * 20
    audio = speech_audio(text)
    assert len(audio) == speech_ms(text) * 16
    assert audio == speech_audio(text)
    assert audio != speech_audio(text.replace("Ava", "Max"))
    assert -21.0 <= pcm16_dbfs(audio) <= -15.0
    long = "word " * 2000
    assert len(speech_audio(long)) == speech_ms(long) * 16


async def test_tts_streams_the_whole_audio_in_chunks() -> None:
    stats = SimulationStats()
    tts = SimulatedTextToSpeech(LatencyProfile.instant().model_copy(update={"tts_chunk_ms": 40}), stats)
    text = "We open at half past eight."
    chunks = [chunk async for chunk in tts.synthesize(text, voice=VOICE, language="en-US")]
    assert b"".join(chunks) == speech_audio(text)
    assert all(len(chunk) == 40 * 16 for chunk in chunks[:-1])
    assert stats.tts_requests == 1
    assert stats.tts_audio_ms == speech_ms(text)
    assert [chunk async for chunk in tts.synthesize("  ", voice=VOICE, language="en-US")] == []


async def test_tts_counts_a_cancelled_request() -> None:
    stats = SimulationStats()
    tts = SimulatedTextToSpeech(LatencyProfile.reference(), stats)
    stream = tts.synthesize("A sentence that will not be heard.", voice=VOICE, language="en-US")
    assert len(await anext(stream)) == 100 * 16
    await stream.aclose()
    assert stats.tts_requests_cancelled == 1
    assert stats.tts_audio_ms == 0


def test_tts_audio_decodes_like_speech_through_the_codec() -> None:
    audio = speech_audio("Half past two on Thursday.")
    round_trip = ulaw_to_array(pcm16_to_ulaw(audio))
    assert round_trip.size == len(audio) // 2


async def test_chunks_of_any_size_are_judged_per_20_ms() -> None:
    # A 300 ms buffer, as a sequential pipeline sends: the onset still lands on its 20 ms frame.
    scenario = _scenario([{"say": "Hello there.", "duration_ms": 600}])
    session = SimulatedSpeechSession(ScriptCursor(scenario.sound_runs()), LatencyProfile.instant(), SimulationStats())
    pcm = _caller_audio(scenario, [440])
    for offset in range(0, len(pcm), 300 * 16):
        await session.send_audio(pcm[offset : offset + 300 * 16])
    await session.aclose()
    out = [transcript async for transcript in session.transcripts()]
    assert out[-1].is_final
    assert (out[-1].start_ms, out[-1].end_ms) == (440, 1040)


# -- tool actions -----------------------------------------------------------------------------------------


async def test_scripted_tool_actions() -> None:
    refused = ToolResult(tool=ToolName.BOOK_APPOINTMENT, outcome=ToolOutcome.REFUSED, message="That slot is taken.")
    booked = ToolResult(tool=ToolName.BOOK_APPOINTMENT, outcome=ToolOutcome.SUCCEEDED, message="Booked.")
    scripted = ScriptedToolActions({ToolName.BOOK_APPOINTMENT: [refused, booked]})
    actions: ToolActions = scripted

    names = [schema["function"]["name"] for schema in actions.schemas(AGENT)]
    assert names == ["book_appointment", "send_sms", "transfer_call", "end_call"]
    sid = "CA" + "0" * 32
    first = await actions.invoke(sid, "book_appointment", {"start": "2026-03-03T10:00", "name": "Sam"})
    second = await actions.invoke(sid, "book_appointment", {"start": "2026-03-03T10:30", "name": "Sam"})
    third = await actions.invoke(sid, "book_appointment", {"start": "2026-03-03T11:00", "name": "Sam"})
    assert [first, second, third] == [refused, booked, booked]  # in order, the last one repeating
    ended = await actions.invoke(sid, "end_call", {})
    assert ended.outcome is ToolOutcome.SUCCEEDED
    assert ended.tool is ToolName.END_CALL
    assert [record.arguments["start"] for record in scripted.of(ToolName.BOOK_APPOINTMENT)] == [
        "2026-03-03T10:00",
        "2026-03-03T10:30",
        "2026-03-03T11:00",
    ]
    assert len(scripted.invocations) == 4
    with pytest.raises(ValueError, match="launch"):
        await actions.invoke(sid, "launch", {})


async def test_a_new_session_of_the_same_call_continues_the_script() -> None:
    scenario = _scenario([{"say": "First."}, {"say": "Second one."}])
    call = SimulatedProviders({"t": scenario}, LatencyProfile.instant()).for_call(AGENT, {"scenario": "t"})
    texts: list[str] = []
    for index in range(2):
        session = await call.stt.start(language="en-US")
        sound = scenario.sound(index)
        assert sound is not None
        pcm = ulaw_to_pcm16(b"\xff" * 800 + render(sound, f0=120.0, level_dbfs=-20.0) + b"\xff" * 800)
        for offset in range(0, len(pcm), FRAME_BYTES_PCM):
            await session.send_audio(pcm[offset : offset + FRAME_BYTES_PCM])
        await session.aclose()
        texts += [t.text async for t in session.transcripts() if t.is_final]
    assert texts == ["first.", "second one."]
