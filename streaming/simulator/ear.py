"""The caller's ear: Twilio's playout buffer, played in real time on the simulator's clock.

Twilio queues the media it receives and plays it in order; a mark comes back when playout reaches it (at
once when nothing is queued); `clear` drops what is queued and echoes every pending mark at once. The
ear models that analytically: it knows, for any moment, what is playing, without a per-sample loop.
Times are simulator-clock milliseconds (see clock.py); audio is μ-law at 8 bytes per millisecond.

Replies: a stretch of agent audio at the ear. A new reply starts when audio arrives while nothing plays
and either nothing played yet, the last reply was cleared, the caller spoke or keyed a digit since it
started, or the ear has been quiet for REPLY_GAP_MS. A shorter silence inside a reply is an underrun:
audio that came late.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from streaming.audio.codec import FRAME_BYTES_ULAW

BYTES_PER_MS: Final = 8
REPLY_GAP_MS: Final = 1500.0
_SILENCE: Final = 0xFF
# Played audio is kept this long for the echo tap, then dropped.
_KEEP_PLAYED_MS: Final = 100.0


@dataclass
class ReplyAtEar:
    """One reply as the caller's ear met it."""

    index: int
    start_ms: float
    end_ms: float
    received_bytes: int = 0
    cut_bytes: int = 0
    intervals: list[list[float]] = field(default_factory=list)
    marks_sent: list[str] = field(default_factory=list)
    marks_played: list[str] = field(default_factory=list)
    marks_flushed: list[str] = field(default_factory=list)
    cleared_at_ms: float | None = None
    underruns: int = 0
    underrun_ms: float = 0.0

    @property
    def interrupted(self) -> bool:
        return self.cut_bytes > 0

    @property
    def played_ms(self) -> float:
        return sum(end - start for start, end in self.intervals)

    @property
    def received_ms(self) -> float:
        return self.received_bytes / BYTES_PER_MS

    def playing_at(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.intervals)


class Ear:
    def __init__(self, *, keep_audio: bool = False, reply_gap_ms: float = REPLY_GAP_MS) -> None:
        self.replies: list[ReplyAtEar] = []
        self.clears: list[float] = []
        self.marks_echoed = 0
        self.marks_before_any_reply: list[str] = []
        self._reply_gap_ms = reply_gap_ms
        self._current: ReplyAtEar | None = None
        self._end = 0.0  # when the queued audio has finished playing
        self._pending: deque[tuple[float, str, ReplyAtEar]] = deque()
        self._caller_onset = float("-inf")
        self._keep_audio = keep_audio
        self._audio = bytearray()
        self._audio_start = 0.0

    def playing(self, t: float) -> bool:
        return self._end > t

    @property
    def quiet_since(self) -> float:
        """When the last audio stopped playing (meaningful while nothing plays)."""
        return self._end

    def caller_input(self, t: float) -> None:
        """The caller starts speaking, or keys a digit, at `t`: audio after this belongs to a new reply."""
        self._caller_onset = t

    def media(self, t: float, ulaw: bytes) -> None:
        size = len(ulaw)
        if not size:
            return
        current = self._current
        if current is not None and self._end > t:
            self._end += size / BYTES_PER_MS
            current.intervals[-1][1] = self._end
            if self._keep_audio:
                self._audio += ulaw
        else:
            if current is None or self._caller_onset > current.start_ms or t - self._end >= self._reply_gap_ms:
                current = ReplyAtEar(len(self.replies) + 1, t, t)
                self.replies.append(current)
                self._current = current
            else:
                current.underruns += 1
                current.underrun_ms += t - self._end
            self._end = t + size / BYTES_PER_MS
            current.intervals.append([t, self._end])
            if self._keep_audio:
                self._audio = bytearray(ulaw)
                self._audio_start = t
        current.end_ms = self._end
        current.received_bytes += size

    def mark(self, t: float, name: str) -> bool:
        """A mark from the server. True when it is to be echoed now (nothing queued before it)."""
        current = self._current if self._current is not None else (self.replies[-1] if self.replies else None)
        if current is not None:
            current.marks_sent.append(name)
        if self._current is not None and self._end > t:
            self._pending.append((self._end, name, self._current))
            return False
        if current is None:
            self.marks_before_any_reply.append(name)
        else:
            current.marks_played.append(name)
        self.marks_echoed += 1
        return True

    def due_marks(self, t: float) -> list[str]:
        """Marks whose audio has finished playing by `t`, in order: to be echoed now."""
        due: list[str] = []
        pending = self._pending
        while pending and pending[0][0] <= t:
            _, name, reply = pending.popleft()
            reply.marks_played.append(name)
            due.append(name)
        self.marks_echoed += len(due)
        return due

    def clear(self, t: float) -> list[str]:
        """`clear` at `t`: queued audio is dropped; returns every pending mark, to be echoed at once."""
        self.clears.append(t)
        current = self._current
        if current is not None:
            current.cleared_at_ms = t
            if self._end > t:
                current.cut_bytes += round((self._end - t) * BYTES_PER_MS)
                self._end = t
                current.intervals[-1][1] = t
                current.end_ms = t
                if self._keep_audio:
                    del self._audio[max(0, round((t - self._audio_start) * BYTES_PER_MS)) :]
        self._current = None
        flushed: list[str] = []
        while self._pending:
            _, name, reply = self._pending.popleft()
            reply.marks_flushed.append(name)
            flushed.append(name)
        self.marks_echoed += len(flushed)
        return flushed

    def drop(self, t: float) -> None:
        """The socket is gone: playout stops at `t`, pending marks can never be echoed."""
        current = self._current
        if current is not None and self._end > t:
            current.cut_bytes += round((self._end - t) * BYTES_PER_MS)
            current.intervals[-1][1] = t
            current.end_ms = t
        self._end = min(self._end, t)
        self._current = None
        self._pending.clear()
        self._audio.clear()

    def heard(self, start: float, end: float) -> bytes | None:
        """The μ-law audio playing between `start` and `end` (one frame, silence where nothing played),
        or None when nothing did. Needs keep_audio. Audio before `start` is forgotten afterwards."""
        if not self._audio:
            return None
        first = round((start - self._audio_start) * BYTES_PER_MS)
        last = round((end - self._audio_start) * BYTES_PER_MS)
        if last <= 0 or first >= len(self._audio):
            return None
        chunk = bytes(self._audio[max(first, 0) : last])
        if first < 0:
            chunk = bytes([_SILENCE]) * -first + chunk
        size = last - first
        if len(chunk) < size:
            chunk += bytes([_SILENCE]) * (size - len(chunk))
        forget = round((start - _KEEP_PLAYED_MS - self._audio_start) * BYTES_PER_MS)
        if forget > FRAME_BYTES_ULAW * 50:
            del self._audio[:forget]
            self._audio_start += forget / BYTES_PER_MS
        return chunk
