"""What a simulated call measured, at the caller's ear: the raw log kept during the call, and the report.

All times are call-time milliseconds on the simulator's clock (clock.py). The report is computed from
the log after the call, so the figures come from one place and can be checked on hand-made logs.

- Latency at the ear (`TurnAtEar.v2v_ms`): from the end of the caller's last voiced frame before a reply
  (the moment it was spoken) to the first sample of the reply playing. A reply that follows keyed digits
  gets `after_dtmf_ms` instead; one that follows neither (greeting, reprompt) gets neither.
- Barge-in stop latency: from the onset of caller speech over the agent's audio to the moment that
  audio stopped playing: the `clear` (by_clear) or, without one, the end of what was queued.
- Mark integrity: mark names carrying numbers ("reply-3-chunk-7") are checked per reply for order and gaps.
"""

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from streaming.simulator.ear import Ear, ReplyAtEar

_NUMBERS = re.compile(r"\d+")
SEND_LAG_BUCKETS = 200


@dataclass
class StepLog:
    """What one caller step did, on the call clock."""

    index: int
    kind: str
    text: str | None
    expects_answer: bool
    started_ms: float | None = None
    ended_ms: float | None = None
    sounds: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, "speech" | "noise")
    pauses: list[tuple[float, float]] = field(default_factory=list)
    dtmf_ms: list[float] = field(default_factory=list)
    timed_out: bool = False

    @property
    def onset_ms(self) -> float | None:
        return self.sounds[0][0] if self.sounds else None

    @property
    def input_end_ms(self) -> float | None:
        """When the caller's input ended: the last sound, the last digit, or the step's end."""
        if self.sounds:
            return self.sounds[-1][1]
        if self.dtmf_ms:
            return self.dtmf_ms[-1]
        return self.ended_ms


@dataclass
class CallLog:
    call_sid: str
    scenario: str
    speed: float
    ear: Ear
    steps: list[StepLog] = field(default_factory=list)
    streams: int = 0
    frames_sent: int = 0
    dtmf_sent: int = 0
    max_send_lag_ms: float = 0.0
    # How late each frame went out against its 20 ms grid, in 1 ms buckets (the last holds the rest).
    send_lag_counts: list[int] = field(default_factory=lambda: [0] * SEND_LAG_BUCKETS)
    malformed_messages: int = 0
    ended_by: Literal["caller", "agent"] = "caller"
    close_code: int | None = None
    close_reason: str = ""
    duration_ms: float = 0.0


class _Report(BaseModel):
    model_config = ConfigDict(frozen=True)


class TurnAtEar(_Report):
    """One agent reply as the caller heard it."""

    index: int
    started_at_ms: float
    ended_at_ms: float
    responds_to: Literal["speech", "dtmf"] | None
    v2v_ms: float | None
    after_dtmf_ms: float | None
    audio_ms: float  # heard
    received_ms: float
    received_bytes: int
    interrupted: bool
    marks: list[str]  # echoed as played
    flushed_marks: list[str]  # echoed by a clear: never heard
    underruns: int
    underrun_ms: float
    marks_reordered: int
    marks_lost: int


class BargeIn(_Report):
    step: int
    onset_ms: float
    reply: int
    stopped_at_ms: float
    stop_latency_ms: float
    by_clear: bool


class CallerStepReport(_Report):
    index: int
    kind: str
    text: str | None
    started_at_ms: float | None
    ended_at_ms: float | None
    timed_out: bool
    # Agent audio playing during the caller's pauses inside this step (a thinking pause): should be 0.
    agent_audio_in_pauses_ms: float
    # Replies that started between the caller's first sound and the end of their input: spoke into them.
    replies_started_during: int
    # The reply playing when this step's sound started was cut by a clear before the next step.
    agent_interrupted: bool
    # Replies that started after this step's input and before the next step (1 for a turn, 0 for a backchannel).
    replies_after: int


class CallReport(_Report):
    call_sid: str
    scenario: str
    speed: float
    ended_by: Literal["caller", "agent"]
    close_code: int | None
    close_reason: str
    streams: int
    duration_ms: float
    frames_sent: int
    dtmf_sent: int
    max_send_lag_ms: float
    send_lag_p99_ms: float = 0.0  # the upper edge of the 1 ms bucket holding the 99th percentile
    malformed_messages: int
    clears: int
    marks_echoed: int
    marks_reordered: int
    marks_lost: int
    underruns: int
    turns: list[TurnAtEar]
    barge_ins: list[BargeIn]
    steps: list[CallerStepReport]

    @property
    def v2v_ms(self) -> list[float]:
        return [turn.v2v_ms for turn in self.turns if turn.v2v_ms is not None]

    @property
    def agent_spoke_in_pauses(self) -> bool:
        return any(step.agent_audio_in_pauses_ms > 0 or step.replies_started_during for step in self.steps)

    @property
    def backchannels_interrupting(self) -> int:
        """Backchannels and noise bursts that cut the agent off."""
        return sum(step.agent_interrupted for step in self.steps if step.kind in ("backchannel", "noise"))


def _bucket_percentile(counts: list[int], fraction: float) -> float:
    """The upper edge (ms) of the 1 ms bucket holding that fraction of the counts; 0 with none."""
    total = sum(counts)
    if not total:
        return 0.0
    seen = 0
    for bucket, number in enumerate(counts):
        seen += number
        if seen >= fraction * total:
            return float(bucket + 1)
    return float(len(counts))


def mark_sequence_problems(names: list[str]) -> tuple[int, int]:
    """(reordered, lost) among marks named with numbers, in the order they were sent.

    Names are compared by their numbers ("r2-s10" → (2, 10)); a name without numbers, or with a
    different count of them, is not compared. A step back is a reorder; a jump of the last number by
    more than one, the rest equal, counts the skipped numbers as lost.
    """
    reordered = lost = 0
    previous: tuple[int, ...] | None = None
    for name in names:
        numbers = tuple(int(n) for n in _NUMBERS.findall(name))
        if not numbers:
            continue
        if previous is not None and len(previous) == len(numbers):
            if numbers <= previous:
                reordered += 1
            elif numbers[:-1] == previous[:-1] and numbers[-1] > previous[-1] + 1:
                lost += numbers[-1] - previous[-1] - 1
        previous = numbers
    return reordered, lost


def _latest(times: list[float], after: float, until: float) -> float | None:
    inside = [t for t in times if after < t <= until]
    return max(inside) if inside else None


def _turn(reply: ReplyAtEar, previous_start: float, speech_ends: list[float], digits: list[float]) -> TurnAtEar:
    speech = _latest(speech_ends, previous_start, reply.start_ms)
    digit = _latest(digits, previous_start, reply.start_ms)
    responds_to: Literal["speech", "dtmf"] | None = None
    if speech is not None and (digit is None or speech >= digit):
        responds_to = "speech"
    elif digit is not None:
        responds_to = "dtmf"
    reordered, lost = mark_sequence_problems(reply.marks_sent)
    return TurnAtEar(
        index=reply.index,
        started_at_ms=reply.start_ms,
        ended_at_ms=reply.end_ms,
        responds_to=responds_to,
        v2v_ms=reply.start_ms - speech if responds_to == "speech" and speech is not None else None,
        after_dtmf_ms=reply.start_ms - digit if responds_to == "dtmf" and digit is not None else None,
        audio_ms=reply.played_ms,
        received_ms=reply.received_ms,
        received_bytes=reply.received_bytes,
        interrupted=reply.interrupted,
        marks=list(reply.marks_played),
        flushed_marks=list(reply.marks_flushed),
        underruns=reply.underruns,
        underrun_ms=reply.underrun_ms,
        marks_reordered=reordered,
        marks_lost=lost,
    )


def _overlap(intervals: list[list[float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)


def _barge_in(step: StepLog, replies: list[ReplyAtEar]) -> BargeIn | None:
    onset = step.onset_ms
    if onset is None:
        return None
    for reply in replies:
        for start, end in reply.intervals:
            if start <= onset < end:
                by_clear = reply.cleared_at_ms is not None and reply.interrupted and end == reply.cleared_at_ms
                return BargeIn(
                    step=step.index,
                    onset_ms=onset,
                    reply=reply.index,
                    stopped_at_ms=end,
                    stop_latency_ms=end - onset,
                    by_clear=by_clear,
                )
    return None


def _step_report(step: StepLog, next_start: float, replies: list[ReplyAtEar]) -> CallerStepReport:
    onset = step.onset_ms
    input_end = step.input_end_ms
    in_pauses = sum(_overlap(reply.intervals, a, b) for reply in replies for a, b in step.pauses)
    during = 0
    interrupted = False
    if onset is not None and input_end is not None:
        during = sum(onset < reply.start_ms < input_end for reply in replies)
        for reply in replies:
            if reply.playing_at(onset) and reply.interrupted and reply.cleared_at_ms is not None:
                interrupted = onset <= reply.cleared_at_ms < next_start
    after = 0
    if input_end is not None:
        after = sum(input_end <= reply.start_ms < next_start for reply in replies)
    return CallerStepReport(
        index=step.index,
        kind=step.kind,
        text=step.text,
        started_at_ms=step.started_ms,
        ended_at_ms=step.ended_ms,
        timed_out=step.timed_out,
        agent_audio_in_pauses_ms=in_pauses,
        replies_started_during=during,
        agent_interrupted=interrupted,
        replies_after=after,
    )


def build_report(log: CallLog) -> CallReport:
    replies = log.ear.replies
    speech_ends = [end for step in log.steps for _, end, kind in step.sounds if kind == "speech"]
    digits = [t for step in log.steps for t in step.dtmf_ms]
    turns = [
        _turn(reply, replies[i - 1].start_ms if i else float("-inf"), speech_ends, digits)
        for i, reply in enumerate(replies)
    ]
    started = [step for step in log.steps if step.started_ms is not None]
    steps = []
    for i, step in enumerate(started):
        next_start = float("inf")
        if i + 1 < len(started):
            following = started[i + 1]
            next_start = following.onset_ms if following.onset_ms is not None else following.started_ms or 0.0
        steps.append(_step_report(step, next_start, replies))
    barge_ins = [b for step in started if step.kind == "say" and (b := _barge_in(step, replies)) is not None]
    return CallReport(
        call_sid=log.call_sid,
        scenario=log.scenario,
        speed=log.speed,
        ended_by=log.ended_by,
        close_code=log.close_code,
        close_reason=log.close_reason,
        streams=log.streams,
        duration_ms=log.duration_ms,
        frames_sent=log.frames_sent,
        dtmf_sent=log.dtmf_sent,
        max_send_lag_ms=log.max_send_lag_ms,
        send_lag_p99_ms=_bucket_percentile(log.send_lag_counts, 0.99),
        malformed_messages=log.malformed_messages,
        clears=len(log.ear.clears),
        marks_echoed=log.ear.marks_echoed,
        marks_reordered=sum(turn.marks_reordered for turn in turns),
        marks_lost=sum(turn.marks_lost for turn in turns),
        underruns=sum(turn.underruns for turn in turns),
        turns=turns,
        barge_ins=barge_ins,
        steps=steps,
    )
