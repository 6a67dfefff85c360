"""What the agent has sent to Twilio, what of it the caller has heard, and cutting or resuming it.

Plain logic, no I/O: `Playback` appends outbound items (μ-law audio, marks, clear) to `outbox`, which
the engine's sender drains to the socket, and learns from mark echoes. Positions are byte offsets into
the agent's audio since the ledger was last reset (8 bytes per ms of μ-law at 8 kHz); times are
audio-stream ms, the engine's clock, which runs at Twilio's playout rate whatever the wall clock does.

How playout is estimated: Twilio plays what it received in order, from when it arrives. A mark echo
says playout reached that position at that moment. From the last echo (or the first send), each later
send plays from max(its send time, the end of the previous one), at 8 bytes/ms. That gives the position
the caller's ear had reached at a clear, which cuts the reply's words (`heard_text`) and is where a
resumed reply picks up again.

Twilio echoes every pending mark when it processes a clear: those echoes mean "flushed", not "played",
and are ignored.

Marks are named `t<turn>:<n>:<label>`, n counting up in the order they are sent within the turn, label
`first` (after the first 20 ms of the turn's audio), `end` (after a clip) or `filler`. A mark re-sent after
a resume gets the next number, so a late flushed echo can never be taken for it, and the numbers stay
strictly increasing on the wire (the call simulator checks marks for gaps and reordering by them).
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

BYTES_PER_MS: Final = 8
# The first audio of a turn goes out as one 20 ms frame and a mark: its echo is the agent's voice
# reaching the ear, which is what voice-to-voice latency is measured to.
FIRST_CHUNK_BYTES: Final = 160
# Larger sends are split: Twilio takes any size, but a megabyte frame would stall the socket for others.
MAX_SEND_BYTES: Final = 8000
# When TTS is still streaming a clip, its length is estimated from its text to cut its words.
_MS_PER_CHARACTER: Final = 65


class ClipKind(StrEnum):
    SPEECH = "speech"  # part of what the agent says: counts in the turn's text
    FILLER = "filler"  # "One moment.": heard, but not part of the conversation


@dataclass(eq=False, slots=True)
class Clip:
    """One TTS chunk (a clause or sentence) or cached phrase, in play order."""

    turn: int
    index: int
    kind: ClipKind
    text: str
    start: int
    first: bool  # carries the turn's first-audio mark
    length: int = 0
    complete: bool = False

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True, slots=True)
class SendMark:
    name: str


@dataclass(frozen=True, slots=True)
class SendClear:
    """Tell Twilio to drop the audio it has buffered."""


CLEAR: Final = SendClear()
Outbound = bytes | SendMark | SendClear


@dataclass(eq=False, slots=True)
class _Mark:
    position: int
    clip: Clip
    first: bool  # the mark after the first audio of a turn
    name: str = ""  # given when it is queued to be sent

    @property
    def label(self) -> str:
        if self.first:
            return "first"
        return "filler" if self.clip.kind is ClipKind.FILLER else "end"


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """A mark echo that means playout reached it."""

    clip: Clip
    first: bool
    drained: bool  # nothing more is pending or waiting to be sent


@dataclass(slots=True)
class _Send:
    start: int
    end: int
    at_ms: int


@dataclass(slots=True)
class _Cut:
    position: int
    at_ms: int
    flushed_marks: list[_Mark] = field(default_factory=list)


class Playback:
    """The agent's outbound audio for the current turn. See the module docstring."""

    def __init__(
        self,
        *,
        notify: Callable[[], None] | None = None,
        on_first_audio: Callable[[int], None] | None = None,
        resume_rewind_ms: int = 100,
    ) -> None:
        """`notify` is called after items were added to `outbox`; `on_first_audio(turn)` when the first
        audio of a turn and its mark were queued."""
        self.outbox: deque[Outbound] = deque()
        self._notify = notify or (lambda: None)
        self._on_first_audio = on_first_audio or (lambda turn: None)
        self.resume_rewind_bytes = resume_rewind_ms * BYTES_PER_MS
        self._audio = bytearray()
        self.clips: list[Clip] = []
        self._sent = 0  # audio before this position has been queued to Twilio
        self._confirmed = 0  # playout reached this position (a mark echo, or a cut)
        self._floor = 0  # the last echoed mark: never rewind past what was confirmed played
        self._origin: tuple[int, int] | None = None  # (position, ms) the playout estimate starts from
        self._sends: list[_Send] = []
        self._scheduled: deque[_Mark] = deque()  # marks waiting for their audio to be sent
        self._pending: deque[_Mark] = deque()  # marks sent, echo not yet seen
        self._flushed: set[str] = set()
        self._held = False
        self._cut: _Cut | None = None
        self._mark_number = 0

    # -- state ------------------------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self._held

    @property
    def audible(self) -> bool:
        """Audio was sent whose playout no echo has confirmed yet: the caller may be hearing the agent."""
        return self._sent > self._confirmed

    @property
    def length(self) -> int:
        return len(self._audio)

    @property
    def drained(self) -> bool:
        """Everything appended was sent and confirmed played, and nothing is still being appended."""
        return (
            not self._held
            and not self._pending
            and not self._scheduled
            and self._sent == len(self._audio)
            and all(clip.complete for clip in self.clips[-1:])
        )

    @property
    def cut_position(self) -> int | None:
        return self._cut.position if self._cut is not None else None

    def unplayed_ms(self, now_ms: int) -> int:
        """Audio appended but not yet played by the estimate: how long playout still needs."""
        return (len(self._audio) - self.played_position(now_ms)) // BYTES_PER_MS

    # -- appending --------------------------------------------------------------------------------------

    def open_clip(self, *, turn: int, index: int, kind: ClipKind, text: str, first: bool = False) -> Clip:
        """A new clip after the last one; `first` puts the turn's first-audio mark 20 ms into it."""
        if self.clips and not self.clips[-1].complete:
            raise RuntimeError("the previous clip is still open: clips play in order")
        clip = Clip(turn, index, kind, text, len(self._audio), first)
        self.clips.append(clip)
        return clip

    def append(self, clip: Clip, audio: bytes, now_ms: int) -> None:
        if clip.complete or not self.clips or self.clips[-1] is not clip:
            raise RuntimeError("audio can only be appended to the open clip")
        if not audio:
            return
        before = clip.length
        self._audio += audio
        clip.length += len(audio)
        if clip.first and before < FIRST_CHUNK_BYTES <= clip.length:
            self._scheduled.append(_Mark(clip.start + FIRST_CHUNK_BYTES, clip, True))
        self._send(now_ms)

    def close(self, clip: Clip, now_ms: int) -> None:
        if clip.complete:
            return
        clip.complete = True
        if clip.length:
            if clip.first and clip.length < FIRST_CHUNK_BYTES:
                self._scheduled.append(_Mark(clip.end, clip, True))
            self._scheduled.append(_Mark(clip.end, clip, False))
        self._send(now_ms)

    def discard_unsent(self, turn: int) -> None:
        """Drop a turn's clips that were never sent (a speculative reply that was not wanted)."""
        keep = [clip for clip in self.clips if clip.turn != turn]
        dropped = [clip for clip in self.clips if clip.turn == turn]
        if not dropped:
            return
        start = dropped[0].start
        if start < self._sent or (keep and keep[-1].start > start):
            raise RuntimeError(f"turn {turn} has sent audio or is not last: it cannot be discarded")
        del self._audio[start:]
        self.clips = keep
        self._scheduled = deque(mark for mark in self._scheduled if mark.clip.turn != turn)

    # -- holding, cutting, resuming ---------------------------------------------------------------------

    def hold(self) -> None:
        """Keep appended audio back (a speculative reply before the turn is confirmed)."""
        self._held = True

    def release(self, now_ms: int) -> None:
        self._held = False
        self._send(now_ms)

    def cut(self, now_ms: int) -> int:
        """Stop playout now (Twilio `clear`) and hold what follows; returns the position the ear reached."""
        position = self.played_position(now_ms)
        flushed: list[_Mark] = []
        if self._sent > position or self._pending:
            # Audio not yet taken by the sender need not reach Twilio at all. Marks still go, ahead of the
            # clear, and come back flushed: every numbered mark reaches the wire, so none looks lost.
            self.outbox_drop_audio()
            self.outbox.append(CLEAR)
            flushed = list(self._pending)
            self._flushed.update(mark.name for mark in flushed)
            self._pending.clear()
            self._notify()
        self._cut = _Cut(position, now_ms, flushed)
        self._held = True
        self._sent = self._confirmed = position
        self._sends.clear()
        self._origin = (position, now_ms)
        return position

    def resume(self, now_ms: int) -> None:
        """Play on after a cut that turned out not to be an interruption: re-send from just before it."""
        cut = self._cut
        if cut is None:
            self.release(now_ms)
            return
        self._cut = None
        restart = max(self._floor, cut.position - self.resume_rewind_bytes)
        # Marks the clear flushed are sent again (under a new number) once playout passes their position.
        replay = [_Mark(mark.position, mark.clip, mark.first) for mark in cut.flushed_marks if mark.position > restart]
        self._scheduled = deque(sorted([*replay, *self._scheduled], key=lambda mark: mark.position))
        self._sent = self._confirmed = restart
        self._origin = (restart, now_ms)
        self._held = False
        self._send(now_ms)

    # -- echoes -----------------------------------------------------------------------------------------

    def mark_echoed(self, name: str, now_ms: int) -> MarkEcho | None:
        """A mark came back. None when it means nothing (flushed by a clear, or not ours)."""
        if name in self._flushed:
            self._flushed.discard(name)
            return None
        if not any(mark.name == name for mark in self._pending):
            return None
        # Echoes come in order; an earlier mark missing its echo has been played too.
        while True:
            mark = self._pending.popleft()
            if mark.name == name:
                break
        self._confirmed = max(self._confirmed, mark.position)
        self._floor = max(self._floor, mark.position)
        self._origin = (mark.position, now_ms)
        self._sends = [send for send in self._sends if send.end > mark.position]
        return MarkEcho(clip=mark.clip, first=mark.first, drained=self.drained)

    def played_position(self, now_ms: int) -> int:
        """Where the caller's ear is now, by the estimate in the module docstring."""
        if self._origin is None:
            return self._confirmed
        position, origin_ms = self._origin
        clock = float(origin_ms)
        for send in self._sends:
            if send.end <= position:
                continue
            start = max(send.start, position)
            clock = max(clock, send.at_ms)
            duration = (send.end - start) / BYTES_PER_MS
            if now_ms < clock + duration:
                return start + max(0, int((now_ms - clock) * BYTES_PER_MS))
            position, clock = send.end, clock + duration
        return max(position, self._confirmed)

    # -- what was heard ---------------------------------------------------------------------------------

    def heard_text(self, clips: list[Clip], position: int | None = None) -> str:
        """The words of these speech clips the caller heard, up to `position` (default: the cut)."""
        if position is None:
            position = self._cut.position if self._cut is not None else self._confirmed
        return " ".join(part for clip in clips if (part := heard_part(clip, position)))

    # -- lifecycle --------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: the turn is over (played out, or cut and abandoned)."""
        self.outbox_drop_audio()
        self._audio = bytearray()
        self.clips = []
        self._sent = self._confirmed = self._floor = 0
        self._origin = None
        self._sends.clear()
        self._scheduled.clear()
        # Marks still pending will never be echoed as played now; their echoes must not count.
        self._flushed.update(mark.name for mark in self._pending)
        self._pending.clear()
        self._held = False
        self._cut = None
        self._mark_number = 0

    def outbox_drop_audio(self) -> None:
        """Drop audio not yet taken by the sender; marks and clears stay."""
        if self.outbox:
            kept = [item for item in self.outbox if not isinstance(item, bytes)]
            self.outbox.clear()
            self.outbox.extend(kept)

    # -- internals --------------------------------------------------------------------------------------

    def _send(self, now_ms: int) -> None:
        if self._held:
            return
        end = len(self._audio)
        queued = False
        while self._sent < end or (self._scheduled and self._scheduled[0].position <= self._sent):
            while self._scheduled and self._scheduled[0].position <= self._sent:
                mark = self._scheduled.popleft()
                self._mark_number += 1
                mark.name = f"t{mark.clip.turn}:{self._mark_number}:{mark.label}"
                self.outbox.append(SendMark(mark.name))
                self._pending.append(mark)
                queued = True
                if mark.first:
                    self._on_first_audio(mark.clip.turn)
            if self._sent >= end:
                break
            stop = min(end, self._sent + MAX_SEND_BYTES)
            if self._scheduled:
                stop = min(stop, self._scheduled[0].position)
            self.outbox.append(bytes(self._audio[self._sent : stop]))
            if self._origin is None:
                self._origin = (self._sent, now_ms)
            self._sends.append(_Send(self._sent, stop, now_ms))
            self._sent = stop
            queued = True
        if queued:
            self._notify()


def heard_part(clip: Clip, position: int) -> str:
    """The words of one speech clip heard by `position`, cut at a word boundary (whole words only)."""
    if clip.kind is not ClipKind.SPEECH or position <= clip.start:
        return ""
    if clip.complete and position >= clip.end:
        return clip.text
    total = clip.length if clip.complete else max(clip.length, len(clip.text) * _MS_PER_CHARACTER * BYTES_PER_MS)
    if total <= 0:
        return ""
    fraction = min(1.0, (position - clip.start) / total)
    tokens = clip.text.split()
    if fraction >= 1.0:
        return clip.text
    return " ".join(tokens[: int(len(tokens) * fraction)])


__all__ = [
    "BYTES_PER_MS",
    "CLEAR",
    "FIRST_CHUNK_BYTES",
    "Clip",
    "ClipKind",
    "MarkEcho",
    "Outbound",
    "Playback",
    "SendClear",
    "SendMark",
    "heard_part",
]
