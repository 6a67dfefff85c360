"""The simulator's ear (Twilio's playout model) and the call report computed from a hand-made log."""

import itertools

from streaming.simulator.ear import Ear
from streaming.simulator.report import CallLog, StepLog, build_report, mark_sequence_problems


def _audio(ms: int) -> bytes:
    return b"\x7f" * (ms * 8)


def test_audio_plays_from_arrival_and_queues_behind_itself() -> None:
    ear = Ear()
    ear.media(100.0, _audio(200))
    ear.media(150.0, _audio(300))  # arrives while the first chunk plays: queued behind it
    [reply] = ear.replies
    assert (reply.start_ms, reply.end_ms) == (100.0, 600.0)
    assert reply.played_ms == reply.received_ms == 500
    assert ear.playing(599.0)
    assert not ear.playing(600.0)
    assert ear.quiet_since == 600.0


def test_marks_come_back_when_playout_reaches_them() -> None:
    ear = Ear()
    assert ear.mark(0.0, "nothing-queued")  # echoed at once
    ear.media(100.0, _audio(200))
    assert not ear.mark(101.0, "a")
    ear.media(102.0, _audio(200))
    assert not ear.mark(103.0, "b")
    assert ear.due_marks(299.0) == []
    assert ear.due_marks(300.0) == ["a"]
    assert ear.due_marks(499.0) == []
    assert ear.due_marks(520.0) == ["b"]
    assert ear.mark(600.0, "after")  # playout is idle again: at once
    assert ear.marks_before_any_reply == ["nothing-queued"]
    assert ear.replies[0].marks_played == ["a", "b", "after"]
    assert ear.marks_echoed == 4


def test_clear_drops_queued_audio_and_flushes_pending_marks_at_once() -> None:
    ear = Ear()
    ear.media(0.0, _audio(1000))
    ear.mark(0.0, "m1")
    ear.media(0.0, _audio(1000))
    ear.mark(0.0, "m2")
    assert ear.due_marks(1000.0) == ["m1"]
    assert ear.clear(1250.0) == ["m2"]
    [reply] = ear.replies
    assert reply.interrupted
    assert reply.cleared_at_ms == 1250.0
    assert reply.played_ms == 1250.0
    assert reply.cut_bytes == 750 * 8
    assert (reply.marks_played, reply.marks_flushed) == (["m1"], ["m2"])
    assert not ear.playing(1250.0)
    ear.media(1300.0, _audio(100))  # after a clear, audio is a new reply
    assert [r.index for r in ear.replies] == [1, 2]


def test_late_audio_inside_a_reply_is_an_underrun_and_a_long_silence_a_new_reply() -> None:
    ear = Ear(reply_gap_ms=1500.0)
    ear.media(0.0, _audio(200))
    ear.media(300.0, _audio(200))  # 100 ms of nothing: the engine was late
    [reply] = ear.replies
    assert (reply.underruns, reply.underrun_ms, reply.played_ms) == (1, 100.0, 400.0)
    ear.media(2000.0, _audio(200))  # 1.5 s of quiet: a new reply (a reprompt, say)
    assert len(ear.replies) == 2


def test_audio_after_the_caller_spoke_is_a_new_reply() -> None:
    ear = Ear()
    ear.media(0.0, _audio(200))
    ear.caller_input(400.0)
    ear.media(900.0, _audio(200))
    assert len(ear.replies) == 2
    assert ear.replies[0].underruns == 0


def test_drop_stops_playout_and_forgets_pending_marks() -> None:
    ear = Ear()
    ear.media(0.0, _audio(1000))
    ear.mark(0.0, "never")
    ear.drop(400.0)
    assert ear.due_marks(5000.0) == []
    assert ear.replies[0].played_ms == 400.0
    assert ear.replies[0].interrupted


def test_heard_gives_the_audio_playing_in_a_frame() -> None:
    ear = Ear(keep_audio=True)
    assert ear.heard(0.0, 20.0) is None
    ear.media(10.0, b"\x01" * 160)  # plays 10..30 ms
    first = ear.heard(0.0, 20.0)
    assert first == b"\xff" * 80 + b"\x01" * 80
    assert ear.heard(20.0, 40.0) == b"\x01" * 80 + b"\xff" * 80
    assert ear.heard(40.0, 60.0) is None


# -- the report -------------------------------------------------------------------------------------------


def _say(index: int, start: float, *runs: tuple[float, float]) -> StepLog:
    step = StepLog(index, "say", "text", True, started_ms=start, ended_ms=runs[-1][1])
    step.sounds = [(a, b, "speech") for a, b in runs]
    step.pauses = [(a[1], b[0]) for a, b in itertools.pairwise(runs)]
    return step


def test_report_latency_at_the_ear_per_turn() -> None:
    ear = Ear()
    ear.media(0.0, _audio(2000))  # greeting 0..2000
    caller = _say(0, 2400.0, (2400.0, 3400.0))
    ear.caller_input(2400.0)
    ear.media(4050.0, _audio(1000))  # the answer, 650 ms after the caller's last voiced frame
    digits = StepLog(1, "dtmf", "12", True, started_ms=5500.0, ended_ms=5650.0, dtmf_ms=[5500.0, 5650.0])
    ear.caller_input(5500.0)
    ear.media(6100.0, _audio(500))  # the answer to the digits: a new reply
    log = CallLog(call_sid="CA" + "0" * 32, scenario="t", speed=1.0, ear=ear, steps=[caller, digits])
    report = build_report(log)

    greeting, answer, after_digits = report.turns
    assert greeting.responds_to is None
    assert greeting.v2v_ms is None
    assert answer.responds_to == "speech"
    assert answer.v2v_ms == 650.0
    assert after_digits.responds_to == "dtmf"
    assert after_digits.after_dtmf_ms == 450.0
    assert report.v2v_ms == [650.0]
    assert report.steps[0].replies_after == 1
    assert not report.agent_spoke_in_pauses


def test_report_barge_in_stop_latency_and_backchannels() -> None:
    ear = Ear()
    ear.media(0.0, _audio(5000))
    ear.mark(0.0, "r1-1")
    backchannel = StepLog(0, "backchannel", "mm-hm", False, started_ms=1000.0, ended_ms=1440.0)
    backchannel.sounds = [(1000.0, 1440.0, "speech")]
    barge = _say(1, 2000.0, (2000.0, 3000.0))
    ear.caller_input(2000.0)
    assert ear.clear(2240.0) == ["r1-1"]
    log = CallLog(call_sid="CA" + "0" * 32, scenario="t", speed=1.0, ear=ear, steps=[backchannel, barge])
    report = build_report(log)

    [barge_in] = report.barge_ins
    assert (barge_in.step, barge_in.onset_ms, barge_in.stop_latency_ms, barge_in.by_clear) == (1, 2000.0, 240.0, True)
    assert not report.steps[0].agent_interrupted  # the clear came after the next step began
    assert report.steps[1].agent_interrupted
    assert report.backchannels_interrupting == 0
    assert report.turns[0].flushed_marks == ["r1-1"]
    assert report.turns[0].interrupted


def test_report_agent_audio_inside_a_thinking_pause() -> None:
    ear = Ear()
    thinking = _say(0, 0.0, (0.0, 1000.0), (2200.0, 3000.0))
    ear.media(1700.0, _audio(300))  # the agent spoke into the pause, from 1700 to 2000
    report = build_report(CallLog(call_sid="CA" + "0" * 32, scenario="t", speed=1.0, ear=ear, steps=[thinking]))
    assert report.steps[0].agent_audio_in_pauses_ms == 300.0
    assert report.steps[0].replies_started_during == 1
    assert report.agent_spoke_in_pauses


def test_mark_sequence_problems() -> None:
    assert mark_sequence_problems(["r1-1", "r1-2", "r1-3"]) == (0, 0)
    assert mark_sequence_problems(["r1-1", "r1-3", "r1-2"]) == (1, 1)
    assert mark_sequence_problems(["r1-1", "r1-5"]) == (0, 3)
    assert mark_sequence_problems(["greeting", "end"]) == (0, 0)
