"""End of turn: how the words look, VAD silence, transcript coverage, speculation, keypad, discarding."""

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.providers.base import Transcript
from streaming.turn import (
    NEVER,
    Completeness,
    EndOfTurn,
    EndOfTurnReason,
    Speculate,
    TurnDetector,
    TurnTiming,
    classify,
    is_backchannel,
    same_words,
    words,
)

TIMING = TurnTiming()


@pytest.mark.parametrize(
    "text",
    [
        "What time do you open?",
        "what time do you open",  # a question without its "?"
        "can you help me",
        "yes",
        "no thanks",
        "tomorrow at 3",
        "can I come at 3 30",
        "I'd like to book an appointment",
        "I need an appointment for my son.",
        "I think so",
        "my number is five five five zero one zero zero two zero zero",  # all ten digits
        "my number is 555 010 0200",
        "Thank you, that's all.",
        "and so on",
    ],
)
def test_complete_looking(text: str) -> None:
    assert classify(text) is Completeness.COMPLETE


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to book",
        "i'd like to book.",  # a final's period does not make it finished
        "I want to check",
        "It is for my son and",
        "but",
        "so",
        "I was thinking um",
        "uh",
        "can I come on",
        "I need an appointment for",
        "is it with the",
        "send it to my",
        "my number is five five five",
        "it's five five five zero one zero zero",
        "my number is 555 0100",
        "and then I",
        "I'd like",
    ],
)
def test_obviously_unfinished(text: str) -> None:
    assert classify(text) is Completeness.INCOMPLETE


@pytest.mark.parametrize("text", ["I need you to call me", "I was wondering if that is", "I wanted to ask about it"])
def test_uncertain(text: str) -> None:
    assert classify(text) is Completeness.UNCERTAIN


def test_empty_text_is_uncertain() -> None:
    assert classify("") is Completeness.UNCERTAIN
    assert classify(" ... ") is Completeness.UNCERTAIN


@pytest.mark.parametrize("text", ["mm-hm", "Mm-hmm.", "uh-huh", "yeah", "Yeah, yeah.", "okay", "OK", "right", "sure"])
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["", "no", "yeah but wait", "okay so what about Tuesday", "sorry"])
def test_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)


def test_words_ignore_case_and_punctuation() -> None:
    assert words("Hello, it's ME… “really”?") == ("hello", "it's", "me", "really")
    assert same_words("I need an appointment.", "i need an appointment")
    assert not same_words("I need an appointment", "I need an appointment for my son")


# -- the detector --------------------------------------------------------------------------------------------


def result(
    text: str,
    end_ms: int,
    *,
    segment: str = "s1",
    start_ms: int = 0,
    final: bool = False,
    stable: str | None = None,
) -> Transcript:
    return Transcript(segment, text, text if stable is None else stable, final, start_ms, end_ms)


def tick(ms: int) -> int:
    """The first 20 ms frame boundary at or after `ms`: decisions are taken as frames arrive."""
    return -(-ms // 20) * 20


class Caller:
    """Drives a TurnDetector as the engine does: VAD per 20 ms frame, transcripts and keys as they come.

    Events are queued with their stream time and played in order; between them, the detector is polled
    on every frame boundary where it asked to be.
    """

    def __init__(self, timing: TurnTiming = TIMING) -> None:
        self.detector = TurnDetector(timing)
        self.now = 0
        self.decisions: list[Speculate | EndOfTurn] = []
        self._events: list[tuple[int, int, Callable[[int], Speculate | EndOfTurn | None]]] = []

    def speak(self, start_ms: int, end_ms: int) -> None:
        """Voiced frames from start to end, as the segmenter reports them (start after 60 ms, stop 200 ms late)."""
        detector = self.detector

        def started(now: int) -> None:
            detector.speech_started(start_ms)

        def stopped(now: int) -> Speculate | EndOfTurn | None:
            detector.speech_stopped(end_ms, end_ms - start_ms)
            return detector.poll(now)

        self._at(start_ms + 60, started)
        for frame_end in range(start_ms + 20, end_ms + 1, 20):
            self._at(frame_end, self._voiced_at(frame_end))
        self._at(end_ms + 200, stopped)

    def hear(self, transcript: Transcript, at_ms: int) -> None:
        self._at(at_ms, lambda now: self.detector.transcript(transcript, now))

    def key(self, digit: str, at_ms: int) -> None:
        self._at(at_ms, lambda now: self.detector.keypad(digit, now))

    def discard(self, until_ms: int, at_ms: int) -> None:
        self._at(at_ms, lambda now: self.detector.discard(until_ms))

    def run(self, until_ms: int) -> None:
        self._events.sort(key=lambda event: (event[0], event[1]))
        while self.now < until_ms:
            frame = self.now + 20
            while self._events and self._events[0][0] <= frame:
                at, _, event = self._events.pop(0)
                self._decide(event(max(at, self.now)))
            self.now = frame
            if frame >= self.detector.next_check_ms:
                self._decide(self.detector.poll(frame))

    def _voiced_at(self, end_ms: int) -> Callable[[int], None]:
        def voiced(now: int) -> None:
            last = self.detector.last_voiced_end_ms
            if last is None or end_ms > last:
                self.detector.last_voiced_end_ms = end_ms

        return voiced

    def _at(self, at_ms: int, event: Callable[[int], Speculate | EndOfTurn | None]) -> None:
        self._events.append((at_ms, len(self._events), event))

    def _decide(self, decision: Speculate | EndOfTurn | None) -> None:
        if decision is not None:
            self.decisions.append(decision)

    @property
    def ends(self) -> list[EndOfTurn]:
        return [decision for decision in self.decisions if isinstance(decision, EndOfTurn)]

    @property
    def speculations(self) -> list[Speculate]:
        return [decision for decision in self.decisions if isinstance(decision, Speculate)]


def test_a_complete_question_speculates_then_ends_after_the_short_wait() -> None:
    caller = Caller()
    caller.speak(0, 1500)
    # The partial with the last word arrives 150 ms after it was said (the STT's lag), the final with it.
    caller.hear(result("what time do you open", 1500), 1650)
    caller.hear(result("What time do you open?", 1500, final=True), 1650)
    caller.run(3000)
    assert [s.text for s in caller.speculations] == ["what time do you open"]
    assert caller.speculations[0].at_ms == 1650  # the caller had been silent long enough: at once
    (end,) = caller.ends
    assert end.reason is EndOfTurnReason.COMPLETE
    assert end.text == "What time do you open?"
    assert end.speech_end_ms == 1500
    assert end.decided_ms == tick(1500 + TIMING.complete_wait_ms)
    assert end.wait_ms == end.decided_ms - 1500
    assert end.speech_start_ms == 0


def test_no_speculation_before_the_caller_is_silent() -> None:
    detector = TurnDetector()
    detector.speech_started(0)
    detector.last_voiced_end_ms = 1500
    assert detector.transcript(result("what time do you open", 1500), 1510) is None
    assert detector.next_check_ms == 1500 + TIMING.speculate_silence_ms
    decision = detector.poll(1540)
    assert isinstance(decision, Speculate)


def test_an_unfinished_sentence_waits_through_a_thinking_pause() -> None:
    caller = Caller()
    caller.speak(0, 1000)
    caller.hear(result("i'd like to book", 1000), 1150)
    caller.hear(result("i'd like to book.", 1000, final=True), 1150)
    # 1.2 s of thinking, then the rest of the sentence as a new segment.
    caller.speak(2200, 3100)
    caller.hear(result("an appointment", 3100, segment="s2", start_ms=2200), 3250)
    caller.run(6000)
    assert all(s.at_ms > 3100 for s in caller.speculations)
    (end,) = caller.ends
    assert end.text == "i'd like to book. an appointment"
    assert end.decided_ms == tick(3100 + TIMING.complete_wait_ms)


def test_an_unfinished_sentence_ends_after_the_long_wait_if_nothing_follows() -> None:
    caller = Caller()
    caller.speak(0, 1000)
    caller.hear(result("i'd like to book.", 1000, final=True), 1150)
    caller.run(5000)
    assert caller.speculations == []
    (end,) = caller.ends
    assert end.reason is EndOfTurnReason.INCOMPLETE
    assert end.decided_ms == 1000 + TIMING.incomplete_wait_ms


def test_digits_read_in_groups_are_waited_for() -> None:
    caller = Caller()
    caller.speak(0, 1500)
    caller.hear(result("it's five five five.", 1500, final=True), 1650)
    caller.speak(2700, 3800)
    caller.hear(result("zero one zero zero.", 3800, segment="s2", start_ms=2700, final=True), 3950)
    caller.speak(5000, 6000)
    caller.hear(result("two zero zero.", 6000, segment="s3", start_ms=5000, final=True), 6150)
    caller.run(8000)
    assert all(s.at_ms > 6000 for s in caller.speculations)
    (end,) = caller.ends
    assert end.text == "it's five five five. zero one zero zero. two zero zero."
    assert end.reason is EndOfTurnReason.COMPLETE  # ten digits: the number is complete
    assert end.decided_ms == tick(6000 + TIMING.complete_wait_ms)


def test_uncertain_words_get_the_medium_wait() -> None:
    caller = Caller()
    caller.speak(0, 1500)
    caller.hear(result("i need you to call me", 1500, final=True), 1650)
    caller.run(4000)
    assert caller.speculations == []
    (end,) = caller.ends
    assert end.reason is EndOfTurnReason.UNCERTAIN
    assert end.decided_ms == 1500 + TIMING.uncertain_wait_ms


def test_a_lagging_transcript_is_waited_for_up_to_the_hard_cap() -> None:
    caller = Caller()
    caller.speak(0, 800)
    caller.hear(result("what time", 600), 750)
    caller.speak(1100, 2000)  # more speech the STT has not transcribed yet
    caller.run(5000)
    (end,) = caller.ends
    assert end.reason is EndOfTurnReason.HARD_CAP
    assert end.decided_ms == 2000 + TIMING.hard_cap_ms
    assert end.text == "what time"


def test_a_lagging_transcript_that_catches_up_ends_the_turn_normally() -> None:
    caller = Caller()
    caller.speak(0, 800)
    caller.hear(result("what time", 600), 750)
    caller.speak(1100, 2000)
    caller.hear(result("what time do you open?", 2000, final=True), 2900)
    caller.run(5000)
    (end,) = caller.ends
    assert end.reason is EndOfTurnReason.COMPLETE
    assert end.decided_ms == 2900  # already past the short wait when the words came


def test_a_short_noise_after_the_words_costs_the_stt_grace_only() -> None:
    caller = Caller()
    caller.speak(0, 1500)
    caller.hear(result("What time do you open?", 1500, final=True), 1650)
    caller.speak(1700, 1800)  # a cough: 100 ms voiced, no words
    caller.run(4000)
    (end,) = caller.ends
    assert end.reason is EndOfTurnReason.NO_TRANSCRIPT
    assert end.decided_ms == 1800 + TIMING.stt_grace_ms


def test_noise_alone_never_ends_a_turn() -> None:
    caller = Caller()
    caller.speak(0, 300)
    caller.run(10_000)
    assert caller.decisions == []
    assert caller.detector.text == ""


def test_speculation_needs_stable_words_and_is_emitted_once_per_wording() -> None:
    caller = Caller()
    caller.speak(0, 1500)
    caller.hear(result("what time do you open", 1500, stable="what time do you"), 1650)
    caller.run(1660)
    assert caller.speculations == []
    caller.hear(result("what time do you open", 1500), 1670)
    caller.hear(result("What time do you open?", 1500, final=True), 1680)  # same words: no new one
    caller.run(1700)
    assert len(caller.speculations) == 1
    assert caller.speculations[0].at_ms == 1670


def test_new_words_bump_the_text_version() -> None:
    detector = TurnDetector()
    detector.transcript(result("what", 200), 300)
    version = detector.text_version
    detector.transcript(result("What.", 200, final=True), 310)
    assert detector.text_version == version
    detector.transcript(result("what time", 500), 600)
    assert detector.text_version == version + 1


def test_keypad_digits_end_the_turn_after_a_pause() -> None:
    caller = Caller()
    caller.key("4", 1000)
    caller.key("2", 1150)
    caller.run(3000)
    (end,) = caller.ends
    assert end.reason is EndOfTurnReason.KEYPAD
    assert end.text == "[keypad] 4 2"
    assert end.speech_end_ms == 1150
    assert end.decided_ms == tick(1150 + TIMING.keypad_wait_ms)
    assert end.speech_start_ms is None


def test_pound_ends_the_keypad_turn_at_once() -> None:
    caller = Caller()
    caller.key("1", 1000)
    caller.key("#", 1150)
    caller.run(2000)
    (end,) = caller.ends
    assert end.reason is EndOfTurnReason.KEYPAD_TERMINATOR
    assert end.text == "[keypad] 1 #"
    assert end.decided_ms == 1150


def test_keypad_digits_join_the_spoken_words() -> None:
    caller = Caller()
    caller.speak(0, 900)
    caller.hear(result("my number is", 900), 1000)
    caller.key("7", 1200)
    caller.key("#", 1300)
    caller.run(2000)
    (end,) = caller.ends
    assert end.text == "my number is [keypad] 7 #"


def test_discarded_speech_and_its_late_transcripts_never_make_a_turn() -> None:
    caller = Caller()
    caller.speak(0, 400)
    caller.hear(result("mm-hm", 400, segment="b1"), 450)
    caller.discard(600, at_ms=600)
    caller.hear(result("Mm-hm.", 400, segment="b1", final=True), 700)  # its final, late
    caller.hear(result("yeah", 500, segment="b2", start_ms=300), 720)  # another result of that audio
    caller.run(5000)
    assert caller.ends == []
    assert caller.detector.text == ""
    assert not caller.detector.pending


def test_a_segment_that_outlives_the_turn_gives_the_next_turn_only_its_new_words() -> None:
    caller = Caller()
    caller.speak(0, 1500)
    caller.hear(result("what time do you open", 1500), 1650)
    # The STT had not closed the segment: its text again after the turn, then the caller going on in it.
    caller.hear(result("What time do you open?", 1500), 2100)
    caller.speak(2400, 3200)
    caller.hear(result("what time do you open and close", 3200), 3350)
    caller.run(6000)
    assert [end.text for end in caller.ends] == ["what time do you open", "and close"]


def test_speech_resuming_pushes_the_end_back() -> None:
    caller = Caller()
    caller.speak(0, 1000)
    caller.hear(result("I need an appointment", 1000), 1150)
    caller.speak(1300, 2000)  # the caller goes on before the short wait is over
    caller.hear(result("I need an appointment for my son", 2000), 2150)
    caller.run(4000)
    (end,) = caller.ends
    assert end.text == "I need an appointment for my son"
    assert end.decided_ms == tick(2000 + TIMING.complete_wait_ms)


def test_nothing_pending_means_no_checks() -> None:
    detector = TurnDetector()
    assert detector.next_check_ms == NEVER
    assert detector.poll(100_000) is None
    assert not detector.pending


@given(
    pauses=st.lists(st.integers(min_value=1, max_value=TIMING.complete_wait_ms // 20 - 1), min_size=1, max_size=6),
    lengths=st.lists(st.integers(min_value=10, max_value=60), min_size=7, max_size=7),
)
def test_no_end_of_turn_inside_pauses_shorter_than_the_shortest_wait(pauses: list[int], lengths: list[int]) -> None:
    """Whatever the words look like, a turn does not end while the caller pauses less than any wait."""
    caller = Caller()
    start = 0
    said: list[str] = []
    for index, frames in enumerate([*pauses, None]):
        end = start + lengths[index] * 20
        caller.speak(start, end)
        said.append("appointment")
        caller.hear(result(" ".join(said), end), end + 150)
        if frames is None:
            break
        start = end + frames * 20
    caller.run(start)
    assert caller.ends == []
    caller.run(start + 10_000)
    assert len(caller.ends) == 1
    assert caller.ends[0].text == " ".join(said)
