"""Scenarios: word timing, pauses and segments, triggers, and every shipped scenario file."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streaming.audio import synth
from streaming.simulator.scenario import (
    SCENARIO_DIR,
    Backchannel,
    DropSocket,
    Hangup,
    Say,
    Scenario,
    ScenarioError,
    Trigger,
    load_scenario,
    parse_scenario,
    shipped_scenario_names,
    shipped_scenarios,
)
from streaming.simulator.speech import (
    DEFAULT_PAUSE_MS,
    CallerSound,
    plan_noise,
    plan_speech,
    syllables,
    word_duration_ms,
)
from streaming.simulator.voice import spoken
from switchboard.agent import AgentDirectory

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {
    "book-appointment",
    "thinking-pause",
    "backchannels",
    "barge-in",
    "dtmf",
    "idle",
    "drop-and-resume",
    "latency",
}


# -- words ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "count"),
    [
        ("the", 1),
        ("like", 1),
        ("five", 1),
        ("zero", 2),
        ("okay", 2),
        ("Tuesday,", 2),
        ("appointment.", 3),
        ("mm-hm", 2),
        ("I'd", 1),
        ("2pm", 2),
    ],
)
def test_syllables(word: str, count: int) -> None:
    assert syllables(word) == count


def test_word_length_grows_with_syllables_in_whole_frames() -> None:
    one, two, three = (word_duration_ms(w) for w in ("book", "zero", "appointment"))
    assert one < two < three
    assert all(ms % 20 == 0 for ms in (one, two, three))
    assert (one, two, three) == (280, 440, 640)


def test_ordinary_speech_runs_at_about_170_words_a_minute() -> None:
    text = (
        "Hi, I would like to book an appointment for a check-up next Tuesday morning if you have any openings, "
        "and I would also like to know whether I need to bring my insurance card with me to the clinic."
    )
    sound = plan_speech(text)
    words = len(text.split())
    per_minute = words / (sound.duration_ms / 60_000)
    assert 150 <= per_minute <= 190


def test_a_faster_speaker_takes_less_time() -> None:
    slow = plan_speech("Can I come on Tuesday instead?", words_per_minute=120)
    fast = plan_speech("Can I come on Tuesday instead?", words_per_minute=240)
    assert fast.duration_ms < slow.duration_ms


def test_words_follow_each_other_without_gaps() -> None:
    [run] = plan_speech("Sorry, actually, can I come on Tuesday instead?").runs
    assert [w.text for w in run.words] == ["Sorry,", "actually,", "can", "I", "come", "on", "Tuesday", "instead?"]
    assert run.words[0].start_ms == 0
    assert all(a.end_ms == b.start_ms for a, b in zip(run.words, run.words[1:], strict=False))
    assert run.words[-1].end_ms == run.duration_ms
    assert run.starts_segment
    assert run.ends_segment


def test_explicit_duration_is_shared_by_natural_length_and_exact() -> None:
    [run] = plan_speech("Hello there everybody", duration_ms=1000).runs
    assert run.duration_ms == 1000
    lengths = [w.end_ms - w.start_ms for w in run.words]
    assert all(ms % 20 == 0 for ms in lengths)
    assert lengths[2] > lengths[0]  # "everybody" outlasts "hello"


@pytest.mark.parametrize("ellipsis", ["…", "..."])
def test_an_ellipsis_is_a_thinking_pause_that_splits_the_transcript_segment(ellipsis: str) -> None:
    sound = plan_speech(f"I'd like to book{ellipsis} an appointment.")
    first, second = sound.runs
    assert [w.text for w in first.words] == ["I'd", "like", "to", "book"]
    assert [w.text for w in second.words] == ["an", "appointment."]
    assert second.offset_ms == first.end_ms + DEFAULT_PAUSE_MS
    assert sound.pauses == ((first.end_ms, second.offset_ms),)
    assert sound.duration_ms == second.end_ms
    # 1.2 s is longer than Transcribe's segment gap: the first part is finalized on its own.
    assert (first.starts_segment, first.ends_segment) == (True, True)
    assert (second.starts_segment, second.ends_segment) == (True, True)


def test_a_short_pause_keeps_one_segment() -> None:
    first, second = plan_speech("five five five… zero one", pause_ms=500).runs
    assert second.offset_ms - first.end_ms == 500
    assert (first.starts_segment, first.ends_segment) == (True, False)
    assert (second.starts_segment, second.ends_segment) == (False, True)


def test_pauses_at_either_end_are_silence_in_the_step() -> None:
    sound = plan_speech("… well… okay…", pause_ms=400)
    assert [run.offset_ms for run in sound.runs] == [400, 400 + 280 + 400]
    assert sound.duration_ms == sound.runs[-1].end_ms + 400


def test_too_short_a_pause_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 300"):
        plan_speech("a… b", pause_ms=100)


def test_noise_is_one_run_without_words() -> None:
    assert plan_noise(150) == CallerSound(plan_noise(150).runs, 160)
    [run] = plan_noise(150).runs
    assert run.kind == "noise"
    assert run.words == ()


# -- steps and triggers ---------------------------------------------------------------------------------


def _scenario(steps: list[dict[str, object]], **fields: object) -> Scenario:
    return Scenario.model_validate({"name": "t", "steps": steps, **fields})


def test_default_triggers() -> None:
    scenario = _scenario(
        [
            {"say": "Hello."},
            {"backchannel": "mm-hm"},
            {"say": "Stop.", "during_reply_ms": 900},
            {"drop_socket": {}},
            {"hangup": True, "after_previous_ms": 50},
        ]
    )
    say, backchannel, barge, drop, hangup = scenario.steps
    assert isinstance(say, Say)
    assert say.trigger == Trigger("after_reply", 400)
    assert isinstance(backchannel, Backchannel)
    assert backchannel.trigger == Trigger("during_reply", 1500)
    assert barge.trigger == Trigger("during_reply", 900)
    assert isinstance(drop, DropSocket)
    assert drop.drop_socket.resume_after_ms == 500
    assert isinstance(hangup, Hangup)
    assert hangup.trigger == Trigger("after_previous", 50)
    assert say.expects_answer
    assert not backchannel.expects_answer


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([{"say": "Hi.", "after_reply_ms": 1, "during_reply_ms": 2}], "at most one of"),
        ([{"sing": "la la"}], "exactly one of: say, backchannel"),
        ([{"say": "Hi.", "noise": 100}], "exactly one of"),
        ([{"hangup": True}, {"say": "Hi."}], "hangup must be the last step"),
        ([{"backchannel": "well I suppose so"}], "one or two short words"),
        ([{"dtmf": "12x"}], "should match pattern"),
        ([{"say": "…"}], "nothing to say"),
        ([{"noise": 100, "level_dbfs": -60}], "greater than or equal"),
    ],
)
def test_bad_steps_are_refused_with_the_reason(steps: list[dict[str, object]], problem: str) -> None:
    with pytest.raises(ScenarioError, match=problem):
        parse_scenario(__import__("yaml").safe_dump({"name": "t", "steps": steps}))


def test_agent_replies() -> None:
    scenario = parse_scenario(
        """
name: t
steps: [{say: "Book me in."}]
agent_replies:
  - say: "Sure."
  - tool: {name: book_appointment, arguments: {start: "2026-03-03T10:00", name: "Sam"}}
    then: "Booked."
"""
    )
    assert scenario.agent_replies is not None
    first, second = scenario.agent_replies
    assert first.say == "Sure."
    assert first.tool is None
    assert second.tool is not None
    assert second.tool.name == "book_appointment"
    assert second.then == "Booked."
    with pytest.raises(ScenarioError, match="`then` follows a tool call"):
        parse_scenario("name: t\nsteps: [{say: hi}]\nagent_replies: [{say: a, then: b}]")
    with pytest.raises(ScenarioError, match="Input should be"):
        parse_scenario("name: t\nsteps: [{say: hi}]\nagent_replies: [{tool: {name: launch_rockets}}]")


def test_sound_runs_follow_the_steps_in_order() -> None:
    scenario = _scenario(
        [{"say": "One… two."}, {"dtmf": "1"}, {"noise": 100}, {"backchannel": "yeah"}, {"wait_silent": 100}]
    )
    runs = scenario.sound_runs()
    assert [(run.kind, [w.text for w in run.words]) for run in runs] == [
        ("speech", ["One"]),
        ("speech", ["two."]),
        ("noise", []),
        ("speech", ["yeah"]),
    ]
    assert scenario.sound(1) is None
    assert scenario.sound(4) is None
    assert scenario.seed(0) == _scenario([{"say": "x"}]).seed(0)
    assert scenario.seed(0) != scenario.seed(1)


# -- files ------------------------------------------------------------------------------------------------


def test_every_required_scenario_is_shipped() -> None:
    assert set(shipped_scenario_names()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_shipped_scenario_loads(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.agent_replies, "the simulated LLM needs a script"
    assert scenario.sound_runs()


def test_shipped_scenarios_name_real_agents() -> None:
    agents = AgentDirectory.load(REPO / "agents")
    for scenario in shipped_scenarios().values():
        assert agents.get(scenario.agent) is not None, scenario.name


def test_shipped_scenarios_do_what_they_say() -> None:
    scenarios = shipped_scenarios()
    pause = scenarios["thinking-pause"]
    sound = pause.sound(1)
    assert sound is not None
    assert len(sound.runs) == 3
    assert len(sound.pauses) == 2
    assert all(end - start == 1200 for start, end in sound.pauses)
    assert any(isinstance(step, Backchannel) for step in scenarios["backchannels"].steps)
    assert any(step.kind == "noise" for step in scenarios["backchannels"].steps)
    assert any(step.kind == "dtmf" for step in scenarios["dtmf"].steps)
    assert any(step.kind == "drop_socket" for step in scenarios["drop-and-resume"].steps)
    assert any(step.kind == "wait_silent" for step in scenarios["idle"].steps)
    assert sum(step.kind == "say" for step in scenarios["latency"].steps) == 10
    barge = scenarios["barge-in"].steps[1]
    assert isinstance(barge, Say)
    assert barge.trigger.kind == "during_reply"
    book = scenarios["book-appointment"].agent_replies
    assert book is not None
    assert [reply.tool.name.value for reply in book if reply.tool] == ["book_appointment", "end_call"]


def test_unknown_scenario_names_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match=r"shipped: .*barge-in"):
        load_scenario("no-such-scenario")


def test_scenario_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nsteps: [{say: hello}]\n")
    assert load_scenario(path).name == "mine"
    assert load_scenario(str(path)).name == "mine"
    other = tmp_path / "other.yaml"
    other.write_text("name: mine\nsteps: [{say: hello}]\n")
    with pytest.raises(ScenarioError, match="does not match the file name"):
        load_scenario(other)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(broken)


def test_scenario_dir_holds_only_scenarios() -> None:
    assert all(path.suffix == ".yaml" for path in SCENARIO_DIR.iterdir())


def test_a_say_that_cannot_be_timed_is_refused_when_loaded() -> None:
    with pytest.raises(ScenarioError, match=r"steps\.1: 40 ms is too short for 3 words"):
        parse_scenario("name: t\nsteps: [{say: hi}, {say: one two three, duration_ms: 40}]")


def test_next_weekday_in_tool_arguments_is_always_after_today() -> None:
    from datetime import date

    from streaming.simulator.scenario import ScriptedTool

    tool = ScriptedTool.model_validate(
        {"name": "book_appointment", "arguments": {"start": "{next:tue}T10:00", "name": "Sam", "slots": 2}}
    )
    # 2026-11-24 is a Tuesday: "next Tuesday" is a week later, never today.
    assert tool.arguments_on(date(2026, 11, 24)) == {"start": "2026-12-01T10:00", "name": "Sam", "slots": 2}
    assert tool.arguments_on(date(2026, 11, 23))["start"] == "2026-11-24T10:00"
    assert tool.arguments_on(date(2026, 11, 29))["start"] == "2026-12-01T10:00"


# -- a real voice for the caller ------------------------------------------------------------------------------


def _tone_voice(ms_per_word: int) -> Callable[[str], bytes]:
    """A stand-in synthesizer: 50 ms of silence, voice as long as the words, 30 ms of silence."""

    def speak(text: str) -> bytes:
        tone = synth.voiced(len(text.split()) * ms_per_word, f0=150.0, level_dbfs=-12.0)
        silence = np.zeros(8 * 50, dtype=np.int16), np.zeros(8 * 30, dtype=np.int16)
        return np.concatenate([silence[0], tone, silence[1]]).astype("<i2").tobytes()

    return speak


def test_a_spoken_line_is_as_long_as_its_voice_without_the_silence_around_it() -> None:
    sound, audio = spoken("one two three", _tone_voice(100), pause_ms=600)
    (run,) = sound.runs
    assert (run.kind, run.offset_ms, run.duration_ms) == ("speech", 0, 300)
    assert [word.text for word in run.words] == ["one", "two", "three"]
    assert sound.duration_ms == 300
    assert len(audio) == 300 * 8  # μ-law, one byte a sample


def test_a_pause_in_a_spoken_line_is_silence_between_two_runs() -> None:
    sound, audio = spoken("one two … three", _tone_voice(100), pause_ms=600)
    first, second = sound.runs
    assert (first.offset_ms, first.duration_ms) == (0, 200)
    assert (second.offset_ms, second.duration_ms) == (800, 100)
    assert sound.pauses == ((200, 800),)
    assert set(audio[200 * 8 : 800 * 8]) == {0xFF}  # μ-law digital silence


def test_a_voice_that_says_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no audible audio"):
        spoken("hello", lambda text: bytes(1600), pause_ms=600)
