"""The caller's sound as a script plans it: words with durations, pauses, and transcript segments.

Both sides of a simulated call read the same plan: the simulator renders it into audio, and the simulated
speech-to-text uses it to know which words a burst of caller energy carries and when each one ends. The
plan is plain data with times in milliseconds of audio, all multiples of one 20 ms frame, so a run of
sound always starts on a frame boundary and energy detection can place it exactly.

A *run* is one stretch of sound without a pause: what an energy detector sees as one onset. Runs are
separated by at least MIN_GAP_MS of silence. A *segment* is what a transcriber reports as one result: a
pause longer than SEGMENT_GAP_MS inside an utterance ends it (Transcribe finalizes the first part and
starts a new result), a shorter one does not.
"""

import itertools
import re
from dataclasses import dataclass
from typing import Final, Literal

from streaming.audio.codec import FRAME_MS

SPEAKING_RATE_WPM: Final = 170.0
DEFAULT_PAUSE_MS: Final = 1200
# A pause inside an utterance longer than this ends a transcript segment, as Transcribe does.
SEGMENT_GAP_MS: Final = 700
# Quiet between two runs of caller sound: longer than the simulated STT's run gap (200 ms), so two runs
# can never merge into one onset and shift the alignment of every later utterance.
MIN_GAP_MS: Final = 300

# Word length from its syllables: 90 ms + 180 ms per syllable. An English word averages about 1.45
# syllables, so the average word lasts ~350 ms: 170 words per minute.
_WORD_BASE_MS: Final = 90.0
_SYLLABLE_MS: Final = 180.0
# "…" or "..." in a script: the caller pauses there.
ELLIPSIS = re.compile(r"…|\.\.\.")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")
_SPOKEN = re.compile(r"[a-z0-9]")


@dataclass(frozen=True, slots=True)
class Word:
    """One word as written in the script (punctuation kept), with its times relative to its run's start."""

    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class SoundRun:
    """One stretch of caller sound without a pause. Times are relative to the start of its step."""

    kind: Literal["speech", "noise"]
    offset_ms: int
    duration_ms: int
    words: tuple[Word, ...] = ()
    starts_segment: bool = True
    ends_segment: bool = True

    @property
    def end_ms(self) -> int:
        return self.offset_ms + self.duration_ms


@dataclass(frozen=True, slots=True)
class CallerSound:
    """What one caller step sounds like: its runs and its total length (pauses at either end included)."""

    runs: tuple[SoundRun, ...]
    duration_ms: int

    @property
    def pauses(self) -> tuple[tuple[int, int], ...]:
        """The silences between runs, as (start, end) relative to the step's start."""
        return tuple((a.end_ms, b.offset_ms) for a, b in itertools.pairwise(self.runs))


def frames_ms(ms: float) -> int:
    """`ms` rounded to whole 20 ms frames, at least one frame."""
    return max(FRAME_MS, round(ms / FRAME_MS) * FRAME_MS)


def syllables(word: str) -> int:
    """A syllable count good enough for timing: vowel groups, a silent final e, one per digit."""
    letters = word.lower()
    count = 0
    for part in re.split(r"[^a-z0-9']+", letters):
        if not part:
            continue
        digits = sum(ch.isdigit() for ch in part)
        groups = len(_VOWEL_GROUPS.findall(part))
        if groups > 1 and part.endswith("e") and not part.endswith(("le", "ee", "ye")):
            groups -= 1
        has_letters = any(ch.isalpha() for ch in part)
        count += digits + max(groups, 1 if has_letters else 0)
    return max(count, 1)


def word_duration_ms(word: str, words_per_minute: float = SPEAKING_RATE_WPM) -> int:
    """How long `word` takes to say at the given rate, in whole frames."""
    natural = _WORD_BASE_MS + _SYLLABLE_MS * syllables(word)
    return frames_ms(natural * SPEAKING_RATE_WPM / words_per_minute)


def is_spoken(word: str) -> bool:
    """Whether a script token is a word at all (a lone dash or comma is not)."""
    return _SPOKEN.search(word.lower()) is not None


def _distribute(natural: list[int], total_ms: int) -> list[int]:
    """Scale word lengths to add up to `total_ms` exactly, in whole frames (the rounding goes to the last)."""
    scale = total_ms / sum(natural)
    lengths = [frames_ms(ms * scale) for ms in natural[:-1]]
    lengths.append(max(FRAME_MS, total_ms - sum(lengths)))
    return lengths


def plan_speech(
    text: str,
    *,
    words_per_minute: float = SPEAKING_RATE_WPM,
    pause_ms: int = DEFAULT_PAUSE_MS,
    duration_ms: int | None = None,
) -> CallerSound:
    """The runs of an utterance. "…" or "..." in `text` is a pause of `pause_ms`; `duration_ms`, when
    given, is the length of the speech without the pauses, shared among the words by their natural length."""
    if pause_ms < MIN_GAP_MS:
        raise ValueError(f"a pause must be at least {MIN_GAP_MS} ms, got {pause_ms}")
    pause_ms = frames_ms(pause_ms)
    parts = [[w for w in part.split() if is_spoken(w)] for part in ELLIPSIS.split(text)]
    all_words = [w for part in parts for w in part]
    if not all_words:
        raise ValueError(f"nothing to say in {text!r}")
    lengths = [word_duration_ms(w, words_per_minute) for w in all_words]
    if duration_ms is not None:
        if duration_ms < FRAME_MS * len(all_words):
            raise ValueError(f"{duration_ms} ms is too short for {len(all_words)} words")
        lengths = _distribute(lengths, duration_ms)
    # Each part is one run; an empty part (text starting or ending with "…", or two in a row) is only silence.
    runs: list[SoundRun] = []
    position = 0
    taken = 0
    for index, part in enumerate(parts):
        if index > 0:
            position += pause_ms
        if not part:
            continue
        words: list[Word] = []
        at = 0
        for word in part:
            length = lengths[taken]
            taken += 1
            words.append(Word(word, at, at + length))
            at += length
        starts_segment = not runs or position - runs[-1].end_ms > SEGMENT_GAP_MS
        if runs and starts_segment:
            last = runs[-1]
            runs[-1] = SoundRun(last.kind, last.offset_ms, last.duration_ms, last.words, last.starts_segment, True)
        runs.append(SoundRun("speech", position, at, tuple(words), starts_segment, False))
        position += at
    last = runs[-1]
    runs[-1] = SoundRun(last.kind, last.offset_ms, last.duration_ms, last.words, last.starts_segment, True)
    return CallerSound(tuple(runs), position)


def plan_noise(duration_ms: int) -> CallerSound:
    duration = frames_ms(duration_ms)
    return CallerSound((SoundRun("noise", 0, duration),), duration)
