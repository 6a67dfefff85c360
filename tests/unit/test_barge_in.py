"""The barge-in judge: stop tentatively at 200 ms of voice, then resume for a backchannel or noise."""

import pytest

from streaming.barge_in import INTERRUPT, PAUSE, RESUME, BargeInJudge, BargeInSettings
from streaming.turn import NEVER

SETTINGS = BargeInSettings()


def paused() -> BargeInJudge:
    judge = BargeInJudge()
    for voiced in range(20, SETTINGS.min_voiced_ms, 20):
        assert judge.voiced(voiced) is None
    assert judge.voiced(SETTINGS.min_voiced_ms) is PAUSE
    assert judge.tentative
    return judge


def test_short_speech_never_stops_the_agent() -> None:
    judge = BargeInJudge()
    assert [judge.voiced(ms) for ms in range(20, SETTINGS.min_voiced_ms, 20)] == [None] * 9
    assert not judge.tentative
    assert judge.speech_stopped(180, "mm-hm", 1000) is None


@pytest.mark.parametrize("word", ["mm-hm", "Yeah.", "okay", "right", "uh-huh", "sure", "yes"])
def test_a_backchannel_resumes_once_the_caller_stops(word: str) -> None:
    judge = paused()
    assert judge.transcript(word, silent_ms=0) is None  # still speaking: it may go on
    assert judge.speech_stopped(400, word, 1000) is RESUME
    assert not judge.tentative


def test_a_backchannel_heard_after_the_stop_resumes_then() -> None:
    judge = paused()
    assert judge.speech_stopped(400, "", 1000) is None
    assert judge.deadline_ms == 1000 + SETTINGS.transcript_grace_ms
    assert judge.transcript("yeah", silent_ms=300) is RESUME


def test_noise_without_words_resumes_after_the_grace() -> None:
    judge = paused()
    assert judge.speech_stopped(300, "", 1000) is None
    assert judge.poll("", 1000 + SETTINGS.transcript_grace_ms - 20) is None
    assert judge.poll("", 1000 + SETTINGS.transcript_grace_ms) is RESUME


def test_a_real_word_interrupts_at_once() -> None:
    judge = paused()
    assert judge.transcript("sorry", silent_ms=0) is INTERRUPT
    assert not judge.tentative


def test_words_after_the_stop_interrupt() -> None:
    judge = paused()
    assert judge.speech_stopped(400, "", 1000) is None
    assert judge.poll("no wait", 1400) is INTERRUPT


def test_long_speech_interrupts_without_words() -> None:
    judge = paused()
    assert judge.voiced(SETTINGS.backchannel_max_voiced_ms) is None
    assert judge.voiced(SETTINGS.backchannel_max_voiced_ms + 20) is INTERRUPT


def test_long_speech_that_stopped_interrupts() -> None:
    judge = paused()
    assert judge.speech_stopped(SETTINGS.backchannel_max_voiced_ms + 100, "yeah", 1000) is INTERRUPT


def test_speech_again_cancels_the_grace() -> None:
    judge = paused()
    judge.speech_stopped(300, "", 1000)
    judge.voiced(100)
    assert judge.deadline_ms == NEVER
    assert judge.poll("", 5000) is None
    assert judge.tentative


def test_reset_forgets_a_pause() -> None:
    judge = paused()
    judge.reset()
    assert not judge.tentative
    assert judge.transcript("sorry", silent_ms=0) is None


def test_a_transcribed_backchannel_resumes_after_a_little_quiet_without_waiting_for_the_stop() -> None:
    judge = paused()
    assert judge.transcript("mm-hm", silent_ms=20) is None
    assert judge.quiet("mm-hm", silent_ms=SETTINGS.resume_silence_ms - 20) is None
    assert judge.quiet("mm-hm", silent_ms=SETTINGS.resume_silence_ms) is RESUME


def test_quiet_without_a_backchannel_decides_nothing() -> None:
    judge = paused()
    assert judge.quiet("", silent_ms=1000) is None
    assert judge.quiet("wait", silent_ms=1000) is None
    assert judge.tentative


def test_a_backchannel_transcribed_after_some_quiet_resumes_at_once() -> None:
    judge = paused()
    assert judge.transcript("yeah", silent_ms=SETTINGS.resume_silence_ms) is RESUME
