"""Is the caller interrupting the agent, or just saying "mm-hm"? Plain logic, no I/O.

The guide wants the agent's audio stopped within 300 ms of a real barge-in, which is before any word of
it can be transcribed. So the agent stops tentatively once the caller has been voiced for
`min_voiced_ms` (shorter noise and backchannels never stop it), keeps its reply, and decides when the
evidence is in:

- the caller's speech ends quickly and its words are only a backchannel, or there are none at all (a
  cough, a door): RESUME, the agent plays on from where it was cut;
- a word that is not a backchannel arrives, or the speech goes on past `backchannel_max_voiced_ms`:
  INTERRUPT, a real barge-in.

When the speech has ended but no words came yet, the judge waits `transcript_grace_ms` for them. A
backchannel resumes as soon as the VAD has heard `resume_silence_ms` of quiet after it, without waiting
for the segmenter to call the speech over (200 ms later): the agent's pause stays short.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from streaming.turn import NEVER, is_backchannel, words


@dataclass(frozen=True, slots=True)
class BargeInSettings:
    min_voiced_ms: int = 200
    backchannel_max_voiced_ms: int = 800
    transcript_grace_ms: int = 400
    resume_silence_ms: int = 60


class BargeInAction(StrEnum):
    PAUSE = "pause"  # stop playout now (Twilio clear) and hold the reply
    RESUME = "resume"  # a backchannel or noise after all: play on from the cut
    INTERRUPT = "interrupt"  # a real barge-in: the reply is abandoned at what was heard


PAUSE: Final = BargeInAction.PAUSE
RESUME: Final = BargeInAction.RESUME
INTERRUPT: Final = BargeInAction.INTERRUPT


class BargeInJudge:
    """Fed only while the agent holds the floor; `reset()` when its turn ends."""

    def __init__(self, settings: BargeInSettings | None = None) -> None:
        self.settings = settings or BargeInSettings()
        self.tentative = False
        self.deadline_ms = NEVER  # when to decide on silence without words (poll)
        self._stopped = False

    def reset(self) -> None:
        self.tentative = False
        self.deadline_ms = NEVER
        self._stopped = False

    def voiced(self, voiced_ms: int) -> BargeInAction | None:
        """The caller is speaking and has been voiced for `voiced_ms` in this segment."""
        if not self.tentative:
            if voiced_ms >= self.settings.min_voiced_ms:
                self.tentative = True
                self._stopped = False
                return PAUSE
            return None
        self._stopped = False
        self.deadline_ms = NEVER
        if voiced_ms > self.settings.backchannel_max_voiced_ms:
            return self._decided(INTERRUPT)
        return None

    def speech_stopped(self, voiced_ms: int, text: str, now_ms: int) -> BargeInAction | None:
        if not self.tentative:
            return None
        if voiced_ms > self.settings.backchannel_max_voiced_ms:
            return self._decided(INTERRUPT)
        self._stopped = True
        if not words(text):
            self.deadline_ms = now_ms + self.settings.transcript_grace_ms
            return None
        return self._decided(RESUME if is_backchannel(text) else INTERRUPT)

    def transcript(self, text: str, silent_ms: int) -> BargeInAction | None:
        """The caller's words so far (since the agent took the floor) changed; the VAD has heard
        `silent_ms` of quiet since the caller's last voiced frame."""
        if not self.tentative or not words(text):
            return None
        if not is_backchannel(text):
            return self._decided(INTERRUPT)
        if self._stopped or silent_ms >= self.settings.resume_silence_ms:
            return self._decided(RESUME)
        return None

    def quiet(self, text: str, silent_ms: int) -> BargeInAction | None:
        """A frame without voice while paused: a backchannel already transcribed resumes once it is over."""
        if self.tentative and silent_ms >= self.settings.resume_silence_ms and is_backchannel(text):
            return self._decided(RESUME)
        return None

    def poll(self, text: str, now_ms: int) -> BargeInAction | None:
        if not self.tentative or now_ms < self.deadline_ms:
            return None
        return self._decided(INTERRUPT if words(text) and not is_backchannel(text) else RESUME)

    def _decided(self, action: BargeInAction) -> BargeInAction:
        self.reset()
        return action
