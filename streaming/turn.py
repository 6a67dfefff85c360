"""When has the caller finished their turn? Plain logic on audio-stream time, no I/O, no clock.

Two kinds of evidence, combined:

- VAD: when the caller's last voiced frame ended (`last_voiced_end_ms`, kept current by the engine).
- The transcript: whether the words so far look like a finished utterance (`classify`), and whether the
  transcript has caught up with the audio (its `end_ms` reaches the last voiced frame).

The wait after the last voiced frame depends on how the words look: short when they look complete (a
question, a short answer, a clause ending in a content word), long when they obviously do not ("and",
"um", "to", "the", "to book", digits being read out), medium otherwise. While the transcript lags the
audio the words cannot be judged: the detector waits for it, but no longer than `stt_grace_ms` when
what it has not heard is short (a cough, a breath) and never past `hard_cap_ms`. Keypad digits end a
turn `keypad_wait_ms` after the last one, or at once on '#'.

A reply may start before the end of the turn is certain: `Speculate` is emitted once the words look
complete, the whole hypothesis is stable and the caller has been silent for `speculate_silence_ms`. The
engine holds that reply's audio until `EndOfTurn` confirms the same words.
"""

import re
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from streaming.providers.base import Transcript

NEVER: Final = 1 << 62  # a deadline that does not come


def _words_of(text: str) -> frozenset[str]:
    return frozenset(text.split())


class Completeness(StrEnum):
    COMPLETE = "complete"
    UNCERTAIN = "uncertain"
    INCOMPLETE = "incomplete"


class EndOfTurnReason(StrEnum):
    """Why a turn ended. Low cardinality on purpose: it is a metric dimension."""

    COMPLETE = "complete"  # the words looked finished: the short wait
    UNCERTAIN = "uncertain"  # neither: the medium wait
    INCOMPLETE = "incomplete"  # the words looked unfinished and the caller still said nothing more
    NO_TRANSCRIPT = "no_transcript"  # short unvoiced-looking audio never got words: judged on what we had
    HARD_CAP = "hard_cap"  # the transcript never caught up with the audio
    KEYPAD = "keypad"  # keypad digits, then a pause
    KEYPAD_TERMINATOR = "keypad_terminator"  # '#'


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """How long to wait, in ms of caller audio, after the last voiced frame."""

    complete_wait_ms: int = 350
    uncertain_wait_ms: int = 800
    incomplete_wait_ms: int = 1500
    hard_cap_ms: int = 2500
    # Uncovered audio shorter than noise_voiced_ms (voiced time) is taken for noise after this long.
    stt_grace_ms: int = 700
    noise_voiced_ms: int = 300
    # The transcript "covers" the audio when it ends within this of the last voiced frame: WebRTC VAD
    # keeps voicing 80-100 ms past the end of speech (its hangover), while STT word times are tight.
    cover_slack_ms: int = 150
    # Silence by the VAD before a reply may start speculatively: one unvoiced frame. The VAD's hangover
    # makes that ~100 ms of real silence, and the transcript must cover the speech as well.
    speculate_silence_ms: int = 20
    keypad_wait_ms: int = 300

    def wait_ms(self, completeness: Completeness) -> int:
        if completeness is Completeness.COMPLETE:
            return self.complete_wait_ms
        if completeness is Completeness.INCOMPLETE:
            return self.incomplete_wait_ms
        return self.uncertain_wait_ms


@dataclass(frozen=True, slots=True)
class Speculate:
    """The words look complete and the caller is silent: a reply may start, its audio held."""

    text: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    text: str
    reason: EndOfTurnReason
    speech_start_ms: int | None  # onset of the turn's first speech; None for a keypad-only turn
    speech_end_ms: int  # end of the last voiced frame (or the last key press)
    decided_ms: int

    @property
    def wait_ms(self) -> int:
        return self.decided_ms - self.speech_end_ms


Decision = Speculate | EndOfTurn

# --- words -------------------------------------------------------------------------------------------

_PUNCTUATION: Final = "\"'.,!?;:()[]{}\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026"
_DIGIT_WORDS: Final = frozenset({"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"})
_ZERO_LETTERS: Final = frozenset({"oh", "o"})
_NUMERAL: Final = re.compile(r"\d+")

_FILLERS: Final = frozenset({"um", "umm", "uh", "uhh", "uhm", "er", "erm", "ah", "hmm", "mm"})
_CONJUNCTIONS: Final = frozenset(
    {"and", "but", "or", "so", "because", "cause", "cuz", "nor", "although", "unless", "whereas", "if", "plus"}
)
_PREPOSITIONS: Final = _words_of(
    "to for at with from of about by into onto in on between during without within towards toward upon "
    "via per than among like until till except including regarding"
)
_DETERMINERS: Final = frozenset(
    {"a", "an", "the", "my", "your", "our", "their", "his", "its", "these", "those", "every", "each", "another"}
)
_SUBJECTS: Final = _words_of(
    "i we they he she i'm i'd i'll i've we're we'd we'll we've they're they'd you're you'd it's that's "
    "there's here's what's let's he's she's gonna wanna gotta kinda sorta"
)
_INCOMPLETE_LAST: Final = _FILLERS | _CONJUNCTIONS | _PREPOSITIONS | _DETERMINERS | _SUBJECTS
# Verbs that, after "to", leave the sentence hanging: "I'd like to book" (versus "I'm going to Boston").
_VERBS_AFTER_TO: Final = _words_of(
    "ask be book bring buy call cancel change check come confirm discuss do find get give go have know "
    "leave let make meet move order pay pick put reschedule say schedule see send set speak take talk "
    "tell try update visit"
)
# Endings that look unfinished by the last word alone but are idioms that close a sentence.
_CLOSING_IDIOMS: Final = frozenset(
    {
        ("think", "so"),
        ("hope", "so"),
        ("guess", "so"),
        ("believe", "so"),
        ("suppose", "so"),
        ("or", "so"),
        ("so", "on"),
        ("come", "in"),
        ("check", "in"),
        ("log", "in"),
        ("sign", "in"),
        ("drop", "in"),
        ("and", "so", "on"),
    }
)
_NEUTRAL_LAST: Final = _words_of(
    "is are was were am be been being have has had do does did can could will would shall should may "
    "might must not don't can't won't didn't doesn't isn't wasn't aren't it me you him her us them this "
    "that there very really just also maybe probably actually still even only what which who whom whose "
    "when where why how whether some any"
)
_QUESTION_OPENERS: Final = _words_of(
    "what when where which who why how can could would will do does did is are was should may have has "
    "what's where's when's how's who's"
)
_SHORT_ANSWER_WORDS: Final = 3
_BACKCHANNELS: Final = _words_of(
    "mm-hm mm-hmm mhm mhmm mmhm mm hmm hm uh-huh uh huh yeah yep yup yes okay ok right sure alright"
)
_MAX_BACKCHANNEL_WORDS: Final = 3
# Full phone numbers: 10 digits (NANP) or 11 with the country code. A shorter run is still being read.
_WHOLE_NUMBER_DIGITS: Final = frozenset({10, 11})


def words(text: str) -> tuple[str, ...]:
    """Lower-case words without surrounding punctuation, for comparing and classifying."""
    result = []
    for raw in text.lower().replace("\u2019", "'").split():
        token = raw.strip(_PUNCTUATION)
        if token:
            result.append(token)
    return tuple(result)


def same_words(a: str, b: str) -> bool:
    """Whether two transcripts say the same thing, ignoring case and punctuation."""
    return words(a) == words(b)


def is_backchannel(text: str) -> bool:
    """Only a backchannel ("mm-hm", "yeah", "okay", "right", ...): acknowledgement, not a turn."""
    said = words(text)
    return 0 < len(said) <= _MAX_BACKCHANNEL_WORDS and all(word in _BACKCHANNELS for word in said)


def _reading_digits(said: tuple[str, ...]) -> bool:
    """The utterance ends in a run of digits that looks like a number being read out, not finished."""
    digits = tokens = 0
    longest = 0
    leading_zero = False
    for word in reversed(said):
        if word in _DIGIT_WORDS or word in _ZERO_LETTERS:
            digits += 1
            longest = max(longest, 1)
        elif _NUMERAL.fullmatch(word):
            digits += len(word)
            longest = max(longest, len(word))
            leading_zero = leading_zero or (word[0] == "0" and len(word) > 1)
        else:
            break
        tokens += 1
    if tokens == 0 or all(word in _ZERO_LETTERS for word in said[-tokens:]):
        return False
    # "at 3 30" is a time, "555 0100" and "five five five" are digits being read.
    looks_read = longest >= 3 or tokens >= 3 or leading_zero
    return looks_read and digits >= 3 and digits not in _WHOLE_NUMBER_DIGITS


def classify(text: str) -> Completeness:
    said = words(text)
    if not said:
        return Completeness.UNCERTAIN
    last = said[-1]
    closing_idiom = said[-2:] in _CLOSING_IDIOMS or said[-3:] in _CLOSING_IDIOMS
    if not closing_idiom:
        if last in _INCOMPLETE_LAST or _reading_digits(said):
            return Completeness.INCOMPLETE
        if len(said) >= 2 and said[-2] == "to" and last in _VERBS_AFTER_TO:
            return Completeness.INCOMPLETE
    if text.rstrip().rstrip("\"')\u201d\u2019").endswith("?"):
        return Completeness.COMPLETE
    if len(said) <= _SHORT_ANSWER_WORDS:
        return Completeness.COMPLETE
    if said[0] in _QUESTION_OPENERS:
        return Completeness.COMPLETE
    if last in _NEUTRAL_LAST:
        return Completeness.UNCERTAIN
    return Completeness.COMPLETE


# --- the detector ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Segment:
    text: str
    stable: bool
    end_ms: int
    skip_words: int = 0  # leading words an earlier turn already took


@dataclass(frozen=True, slots=True)
class _Speech:
    onset_ms: int
    end_ms: int
    voiced_ms: int


_MAX_SPEECH_HISTORY: Final = 16
_CONSUMED_MEMORY: Final = 64


class TurnDetector:
    """Collects one caller turn (transcript segments, VAD speech, keypad digits) and decides when it ends.

    All times are audio-stream ms. The engine sets `last_voiced_end_ms` on each voiced frame of a speech
    segment and calls `poll(now_ms)` whenever `now_ms >= next_check_ms` (one int compare per frame).
    Every method returns a Decision or None; after an EndOfTurn the detector starts a new turn.
    """

    def __init__(self, timing: TurnTiming | None = None) -> None:
        self.timing = timing or TurnTiming()
        self.last_voiced_end_ms: int | None = None
        self.next_check_ms = NEVER
        # Bumped whenever the words of the turn change: the engine compares it to drop a speculation.
        self.text_version = 0
        self._segments: dict[str, _Segment] = {}
        self._speech: deque[_Speech] = deque(maxlen=_MAX_SPEECH_HISTORY)
        self._onset_ms: int | None = None
        self._turn_onset_ms: int | None = None
        self._digits: list[str] = []
        self._last_digit_ms = 0
        self._terminated = False
        self._speculated: tuple[str, ...] | None = None
        self._discard_until_ms = -NEVER
        # Segment id → how many of its words earlier turns took (bounded: old ids are forgotten).
        self._consumed: dict[str, int] = {}
        self._words: tuple[str, ...] = ()

    # -- state ------------------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The caller's words so far in this turn (not counting keypad digits)."""
        return " ".join(segment.text for segment in self._segments.values() if segment.text)

    @property
    def pending(self) -> bool:
        """Something of a turn has been heard: words, digits, or speech going on."""
        return bool(self._segments) or bool(self._digits) or self._onset_ms is not None

    @property
    def speaking(self) -> bool:
        return self._onset_ms is not None

    # -- inputs -----------------------------------------------------------------------------------------

    def speech_started(self, at_ms: int) -> None:
        self._onset_ms = at_ms
        if self._turn_onset_ms is None:
            self._turn_onset_ms = at_ms
        if self.last_voiced_end_ms is None or self.last_voiced_end_ms < at_ms:
            self.last_voiced_end_ms = at_ms

    def speech_stopped(self, at_ms: int, voiced_ms: int) -> None:
        onset = self._onset_ms if self._onset_ms is not None else at_ms - voiced_ms
        self._speech.append(_Speech(onset, at_ms, voiced_ms))
        self._onset_ms = None
        self.last_voiced_end_ms = max(self.last_voiced_end_ms or at_ms, at_ms)
        self.next_check_ms = min(self.next_check_ms, at_ms)

    def transcript(self, result: Transcript, now_ms: int, offset_ms: int = 0) -> Decision | None:
        """One STT result; `offset_ms` maps the STT session's audio time onto the stream's."""
        end_ms = result.end_ms + offset_ms
        segment = self._segments.get(result.segment_id)
        if segment is None:
            # An STT segment can outlive our turn (its pause was shorter than the STT's endpoint): the
            # words a finished turn took are skipped, and only what the caller said since is new.
            skip = self._consumed.get(result.segment_id, 0)
            if len(result.text.split()) <= skip:
                return None
            if not skip and end_ms <= self._discard_until_ms:
                return None
            segment = self._segments[result.segment_id] = _Segment("", False, end_ms, skip)
            if self._turn_onset_ms is None:
                self._turn_onset_ms = result.start_ms + offset_ms
        tokens = result.text.split()
        segment.text = " ".join(tokens[segment.skip_words :])
        segment.end_ms = end_ms
        stable = result.is_final or words(result.stable_text) == words(result.text)
        segment.stable = stable
        if not segment.text:
            del self._segments[result.segment_id]
        current = words(self.text)
        if current != self._words:
            self._words = current
            self.text_version += 1
        return self._evaluate(now_ms)

    def keypad(self, digit: str, now_ms: int) -> Decision | None:
        self._digits.append(digit)
        self._last_digit_ms = now_ms
        self._terminated = digit == "#"
        return self._evaluate(now_ms)

    def poll(self, now_ms: int) -> Decision | None:
        if now_ms < self.next_check_ms:
            return None
        return self._evaluate(now_ms)

    def discard(self, until_ms: int) -> None:
        """Forget the turn so far (a backchannel or noise while the agent spoke); transcripts ending by
        `until_ms` are dropped when they arrive late."""
        self._discard_until_ms = max(self._discard_until_ms, until_ms)
        self._reset()

    # -- deciding ---------------------------------------------------------------------------------------

    def _evaluate(self, now_ms: int) -> Decision | None:
        timing = self.timing
        if self._digits:
            deadline = self._last_digit_ms if self._terminated else self._last_digit_ms + timing.keypad_wait_ms
            if now_ms >= deadline and self._onset_ms is None:
                reason = EndOfTurnReason.KEYPAD_TERMINATOR if self._terminated else EndOfTurnReason.KEYPAD
                keys = "[keypad] " + " ".join(self._digits)
                spoken = self.text
                return self._end(f"{spoken} {keys}" if spoken else keys, reason, self._last_digit_ms, now_ms)
            self.next_check_ms = max(deadline, now_ms + 1)
            return None
        if not self._segments:
            self.next_check_ms = NEVER
            return None
        text = self.text
        last_voiced = self.last_voiced_end_ms
        covered_ms = max(segment.end_ms for segment in self._segments.values())
        if last_voiced is None or last_voiced < covered_ms:
            last_voiced = covered_ms
        completeness = classify(text)
        wait = timing.wait_ms(completeness)
        reason = EndOfTurnReason(completeness.value)
        covered = covered_ms >= last_voiced - timing.cover_slack_ms
        if not covered:
            if self._onset_ms is None and self._uncovered_voiced_ms(covered_ms) < timing.noise_voiced_ms:
                if timing.stt_grace_ms > wait:
                    wait, reason = timing.stt_grace_ms, EndOfTurnReason.NO_TRANSCRIPT
            else:
                wait, reason = timing.hard_cap_ms, EndOfTurnReason.HARD_CAP
        if wait > timing.hard_cap_ms:
            wait, reason = timing.hard_cap_ms, EndOfTurnReason.HARD_CAP
        # Silence is measured from the last voiced frame, not from the segmenter's smoothed stop: every
        # wait is longer than its hangover, and speculation should not pay for it.
        deadline = last_voiced + wait
        if now_ms >= deadline:
            return self._end(text, reason, last_voiced, now_ms)
        next_check = deadline
        if covered and completeness is Completeness.COMPLETE and self._speculated != self._words:
            speculate_at = last_voiced + timing.speculate_silence_ms
            if now_ms < speculate_at:
                next_check = speculate_at
            elif all(segment.stable for segment in self._segments.values()):
                self._speculated = self._words
                self.next_check_ms = max(deadline, now_ms + 1)
                return Speculate(text, now_ms)
        self.next_check_ms = max(next_check, now_ms + 1)
        return None

    def _uncovered_voiced_ms(self, covered_ms: int) -> int:
        slack = self.timing.cover_slack_ms
        return sum(speech.voiced_ms for speech in self._speech if speech.end_ms > covered_ms + slack)

    def _end(self, text: str, reason: EndOfTurnReason, speech_end_ms: int, now_ms: int) -> EndOfTurn:
        decision = EndOfTurn(
            text=text,
            reason=reason,
            speech_start_ms=self._turn_onset_ms,
            speech_end_ms=speech_end_ms,
            decided_ms=now_ms,
        )
        # Late results for this turn's audio must not start another one.
        self._discard_until_ms = max(self._discard_until_ms, speech_end_ms)
        self._reset()
        return decision

    def _reset(self) -> None:
        for segment_id, segment in self._segments.items():
            self._consumed[segment_id] = segment.skip_words + len(segment.text.split())
        while len(self._consumed) > _CONSUMED_MEMORY:
            del self._consumed[next(iter(self._consumed))]
        self._segments.clear()
        self._speech.clear()
        self._turn_onset_ms = self._onset_ms
        self._digits.clear()
        self._terminated = False
        self._speculated = None
        if self._words:
            self._words = ()
            self.text_version += 1
        self.next_check_ms = NEVER
