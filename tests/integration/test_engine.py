"""The call engine end to end, without a socket: CallEngine.run against an in-memory Twilio.

`FakeTwilio` plays Twilio's side of one media stream on a frame clock: it sends the caller's audio as
20 ms μ-law frames with timestamps (rendered from a scenario's steps, so the simulated STT aligns to it),
plays what the engine sends into a playout buffer at real time on that clock, echoes marks when playout
reaches them, and honours `clear` (pending marks come back at once). The providers are the simulated
ones (streaming/providers/simulated.py) with no latency, the state is a real Redis, the records moto's
DynamoDB. Everything is asserted on orderings, counts and audio-time positions, never on wall time.
"""

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import redis.asyncio as aioredis
from moto import mock_aws

from streaming.call import CallEnd, CallEngine, CallOutcome, EngineDeps
from streaming.knowledge import SEARCH_TOOL, KnowledgeBase, load_knowledge
from streaming.phrases import APOLOGY, PhraseStore
from streaming.protocol import Dtmf, DtmfPayload, Mark, MarkPayload, Media, MediaPayload, StartInfo, Stop
from streaming.providers.base import (
    CallProviders,
    LlmEvent,
    Providers,
    SpeechSession,
    TextToSpeech,
    ToolCall,
    Transcript,
)
from streaming.providers.simulated import LatencyProfile, SimulatedProviders, speech_ms
from streaming.simulator.scenario import (
    SOUND_RUNS_PARAMETER,
    Backchannel,
    DropSocket,
    Hangup,
    Noise,
    Say,
    Scenario,
    WaitSilent,
    parse_scenario,
    shipped_scenarios,
)
from streaming.simulator.scenario import Dtmf as DtmfStep
from streaming.simulator.tools import ScriptedToolActions
from streaming.simulator.voice import render
from streaming.stream import StreamClosed
from streaming.telemetry import TurnReport
from switchboard.agent import AgentConfig, AgentDirectory, Voice, load_agent
from switchboard.call import Call, CallDirection
from switchboard.events import CallEvent, CallEvents
from switchboard.records import CallRecords, table_definition
from switchboard.state import CallStateStore, ChatMessage, lease_key
from switchboard.tool import ToolName, ToolResult
from switchboard.turn import Role, Turn

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

REPO = Path(__file__).resolve().parents[2]
TABLE = "switchboard-engine-test"
CALLER = "+14155550123"
CLINIC = "+15550100200"
FRAME_MS = 20
FRAME_BYTES = 160
SILENT_FRAME = b"\xff" * FRAME_BYTES
# Real seconds per 20 ms frame: 20 times faster than real time. Providers answer at once, so what
# happens between two frames does not depend on this.
FRAME_SLEEP_S = 0.001


# -- Twilio's side ----------------------------------------------------------------------------------------


@dataclass
class HeardReply:
    """A stretch of agent audio at the ear: started when audio arrived while nothing played."""

    start_ms: int
    intervals: list[list[float]] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)

    @property
    def played_ms(self) -> float:
        return sum(end - start for start, end in self.intervals)


class FakeTwilio:
    """One Twilio media stream in memory: caller audio out on a frame clock, agent audio played back in."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        first_step: int = 0,
        stream_sid: str = "MZ" + "1" * 32,
        max_ms: int = 120_000,
        quiet_end_ms: int = 3_000,
        frame_period_s: float = FRAME_SLEEP_S,
    ) -> None:
        self.scenario = scenario
        self.stream_sid = stream_sid
        self.step = first_step
        self.max_ms = max_ms
        self.quiet_end_ms = quiet_end_ms
        self.frame_period_s = frame_period_s
        self.now_ms = 0
        self._inbound: asyncio.Queue[Media | Dtmf | Mark | Stop | None] = asyncio.Queue()
        self._end_ms = 0.0  # when the queued agent audio has finished playing
        self._pending: list[tuple[float, str]] = []
        self.replies: list[HeardReply] = []
        self.clears: list[int] = []
        self.marks_echoed: list[tuple[int, str]] = []
        self.marks_flushed: list[str] = []
        self.closed_at: int | None = None
        self.dropped = False
        self.caller_runs: list[tuple[int, int]] = []  # when the caller's sound ran, in stream ms
        self.pauses: list[tuple[int, int]] = []  # the caller's pauses inside an utterance
        self.step_started: dict[int, int] = {}
        self._caller_input_ms = -1
        self._last_step_end = 0
        # A call starts with the agent's turn (the greeting); a resumed stream with whoever speaks first.
        self._turn_pending = first_step == 0
        self._agent_spoke_since = False
        self._chunk = 0
        # `during_reply_ms` counts from the start of the agent's answer to the caller's last turn, however
        # often a backchannel paused it since.
        self._reply_anchor = 0
        self._anchor_pending = True

    # -- MediaStream ------------------------------------------------------------------------------------

    async def receive(self) -> Media | Dtmf | Mark | Stop:
        message = await self._inbound.get()
        if message is None:
            raise StreamClosed("dropped")
        return message

    async def send_media(self, ulaw: bytes) -> None:
        self._check_open()
        t = float(self.now_ms)
        duration = len(ulaw) / 8
        if self._end_ms > t and self.replies:
            self._end_ms += duration
            self.replies[-1].intervals[-1][1] = self._end_ms
        else:
            new_reply = (
                not self.replies or self._caller_input_ms > self.replies[-1].start_ms or t - self._end_ms >= 1500
            )
            if new_reply:
                self.replies.append(HeardReply(self.now_ms))
                if self._anchor_pending:
                    self._reply_anchor = self.now_ms
                    self._anchor_pending = False
            self._end_ms = t + duration
            self.replies[-1].intervals.append([t, self._end_ms])
        self._agent_spoke_since = True

    async def send_mark(self, name: str) -> None:
        self._check_open()
        if self._end_ms > self.now_ms:
            self._pending.append((self._end_ms, name))
        else:
            self._echo(name)

    async def send_clear(self) -> None:
        self._check_open()
        self.clears.append(self.now_ms)
        if self._end_ms > self.now_ms and self.replies:
            self.replies[-1].intervals[-1][1] = float(self.now_ms)
        self._end_ms = float(self.now_ms)
        for _, name in self._pending:
            self.marks_flushed.append(name)
            self._inbound.put_nowait(self._mark(name))
        self._pending.clear()

    async def close(self) -> None:
        if self.closed_at is None:
            self.closed_at = self.now_ms

    def _check_open(self) -> None:
        if self.closed_at is not None or self.dropped:
            raise StreamClosed("closed")

    # -- the ear ----------------------------------------------------------------------------------------

    def playing(self, at_ms: float | None = None) -> bool:
        return self._end_ms > (self.now_ms if at_ms is None else at_ms)

    def agent_audio_between(self, start_ms: float, end_ms: float) -> float:
        """Ms of agent audio that played at the ear between two stream times."""
        total = 0.0
        for reply in self.replies:
            for a, b in reply.intervals:
                total += max(0.0, min(b, end_ms) - max(a, start_ms))
        return total

    def _mark(self, name: str) -> Mark:
        return Mark.model_construct(
            event="mark", sequence_number=0, stream_sid=self.stream_sid, mark=MarkPayload.model_construct(name=name)
        )

    def _echo(self, name: str) -> None:
        self.marks_echoed.append((self.now_ms, name))
        if self.replies:
            self.replies[-1].marks.append(name)
        self._inbound.put_nowait(self._mark(name))

    # -- the caller -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send frames until the script is done (then `stop`), the engine closes, or the socket drops."""
        frames: list[bytes] = []
        digits: list[tuple[int, str]] = []
        step_end_ms: int | None = None
        busy = False
        loop = asyncio.get_running_loop()
        next_frame = loop.time()
        while self.closed_at is None and not self.dropped:
            if not frames and not digits and (step_end_ms is None or self.now_ms >= step_end_ms):
                if busy:
                    self._last_step_end = self.now_ms
                    step_end_ms = None
                    busy = False
                    # After a turn of the caller, the next one waits for a reply that started after it.
                    self._agent_spoke_since = False
                if self.step >= len(self.scenario.steps):
                    if not self.playing() and self.now_ms - max(self._end_ms, self._last_step_end) >= self.quiet_end_ms:
                        self._inbound.put_nowait(self._stop())
                        return
                elif self._triggered(self.scenario.steps[self.step]):
                    step = self.scenario.steps[self.step]
                    self.step_started[self.step] = self.now_ms
                    if isinstance(step, Hangup):
                        self._inbound.put_nowait(self._stop())
                        return
                    if isinstance(step, DropSocket):
                        self.dropped = True
                        self._inbound.put_nowait(None)
                        return
                    frames, digits, step_end_ms = self._start_step(self.step, step)
                    busy = True
                    self.step += 1
            if self.now_ms >= self.max_ms:
                self._inbound.put_nowait(self._stop())
                return
            frame = frames.pop(0) if frames else SILENT_FRAME
            self._chunk += 1
            media = Media.model_construct(
                event="media",
                sequence_number=self._chunk,
                stream_sid=self.stream_sid,
                media=MediaPayload.model_construct(
                    track="inbound", chunk=self._chunk, timestamp=self.now_ms, payload=frame
                ),
            )
            self._inbound.put_nowait(media)
            while digits and digits[0][0] <= self.now_ms:
                digit = digits.pop(0)[1]
                self._inbound.put_nowait(
                    Dtmf.model_construct(
                        event="dtmf",
                        sequence_number=0,
                        stream_sid=self.stream_sid,
                        dtmf=DtmfPayload.model_construct(track="inbound_track", digit=digit),
                    )
                )
                self._caller_input_ms = self.now_ms
            self.now_ms += FRAME_MS
            for due, name in [entry for entry in self._pending if entry[0] <= self.now_ms]:
                self._pending.remove((due, name))
                self._echo(name)
            # Frames on a fixed schedule, not sleeps that drift.
            next_frame += self.frame_period_s
            await asyncio.sleep(max(0.0, next_frame - loop.time()))

    def _stop(self) -> Stop:
        return Stop.model_construct(event="stop", sequence_number=0, stream_sid=self.stream_sid)

    def _triggered(self, step: object) -> bool:
        assert isinstance(step, Say | Backchannel | Noise | DtmfStep | WaitSilent | DropSocket | Hangup)
        trigger = step.trigger
        if trigger.kind == "after_previous":
            return self.now_ms - self._last_step_end >= trigger.ms
        if trigger.kind == "during_reply":
            if self._anchor_pending or not self.playing():
                return False
            return self.now_ms - self._reply_anchor >= trigger.ms
        if self.playing():
            return False
        if self._turn_pending and not self._agent_spoke_since:
            return False
        return self.now_ms - max(self._end_ms, self._last_step_end) >= trigger.ms

    def _start_step(self, index: int, step: object) -> tuple[list[bytes], list[tuple[int, str]], int | None]:
        self._turn_pending = isinstance(step, Say | DtmfStep)
        self._agent_spoke_since = False
        if self._turn_pending:
            self._anchor_pending = True
        if isinstance(step, DtmfStep):
            digits = [(self.now_ms + i * step.interval_ms, digit) for i, digit in enumerate(step.dtmf)]
            return [], digits, None
        if isinstance(step, WaitSilent):
            return [], [], self.now_ms + step.wait_silent
        sound = self.scenario.sound(index)
        assert sound is not None
        audio = render(
            sound,
            f0=self.scenario.caller_f0,
            level_dbfs=self.scenario.caller_level_dbfs,
            noise_dbfs=step.level_dbfs if isinstance(step, Noise) else -30.0,
            seed=self.scenario.seed(index),
        )
        for run in sound.runs:
            self.caller_runs.append((self.now_ms + run.offset_ms, self.now_ms + run.end_ms))
        for start, end in sound.pauses:
            self.pauses.append((self.now_ms + start, self.now_ms + end))
        self._caller_input_ms = self.now_ms
        return [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)], [], None


# -- fixtures ---------------------------------------------------------------------------------------------


def new_sid() -> str:
    return "CA" + uuid.uuid4().hex


@pytest.fixture
def dynamodb(aws_env: None) -> Iterator["DynamoDBClient"]:
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(**table_definition(TABLE))
        yield client


@pytest.fixture
def records(dynamodb: "DynamoDBClient") -> CallRecords:
    return CallRecords(TABLE, dynamodb)


@pytest.fixture
def store(redis_client: aioredis.Redis) -> CallStateStore:
    return CallStateStore(redis_client)


def receptionist(**conversation: Any) -> AgentConfig:
    agent = load_agent(REPO / "agents" / "clinic-receptionist.yaml")
    if conversation:
        agent = agent.model_copy(update={"conversation": agent.conversation.model_copy(update=conversation)})
    return agent


def scenario(text: str) -> Scenario:
    return parse_scenario(text)


@dataclass
class Harness:
    records: CallRecords
    store: CallStateStore
    redis: aioredis.Redis
    agent: AgentConfig = field(default_factory=receptionist)
    tools: ScriptedToolActions = field(default_factory=ScriptedToolActions)
    reports: list[TurnReport] = field(default_factory=list)
    phrase_store: PhraseStore = field(default_factory=PhraseStore)
    lease_ttl_ms: int = 6_000
    providers: SimulatedProviders | None = None
    events: CallEvents | None = None
    knowledge: dict[str, KnowledgeBase] = field(default_factory=dict)

    def deps(self, providers: Providers) -> EngineDeps:
        return EngineDeps(
            events=self.events,
            agents=AgentDirectory({REPO / "agents" / "clinic-receptionist.yaml": self.agent}),
            providers=providers,
            tools=self.tools,
            store=self.store,
            records=self.records,
            owner=f"test-{uuid.uuid4().hex[:8]}",
            on_turn=self.reports.append,
            phrase_store=self.phrase_store,
            lease_ttl_ms=self.lease_ttl_ms,
            knowledge=self.knowledge,
        )

    def record_call(self, sid: str, *, answered_at: datetime | None = None) -> None:
        call = Call(
            call_sid=sid,
            direction=CallDirection.INBOUND,
            from_number=CALLER,
            to_number=CLINIC,
            agent_id=self.agent.id,
            created_at=datetime.now(UTC),
            answered_at=answered_at,
        )
        self.records.create_call(call)

    async def call(
        self,
        sid: str,
        script: Scenario,
        *,
        providers: Providers | None = None,
        first_step: int = 0,
        sound_runs: int = 0,
        twilio: FakeTwilio | None = None,
    ) -> tuple[CallOutcome, FakeTwilio]:
        if providers is None:
            if self.providers is None:
                self.providers = SimulatedProviders({script.name: script}, LatencyProfile.instant())
            providers = self.providers
        twilio = twilio or FakeTwilio(script, first_step=first_step)
        start = StartInfo.model_validate(
            {
                "streamSid": twilio.stream_sid,
                "callSid": sid,
                "customParameters": {"scenario": script.name, SOUND_RUNS_PARAMETER: str(sound_runs)},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }
        )
        engine = CallEngine(self.deps(providers))
        async with asyncio.timeout(60):
            async with asyncio.TaskGroup() as group:
                caller = group.create_task(twilio.run())
                outcome = await engine.run(twilio, start)
                caller.cancel()
        return outcome, twilio

    def turns(self, sid: str) -> list[Turn]:
        timeline = self.records.timeline(sid)
        assert timeline is not None
        return timeline.turns


@pytest.fixture
def harness(records: CallRecords, store: CallStateStore, redis_client: aioredis.Redis) -> Harness:
    return Harness(records=records, store=store, redis=redis_client)


def texts(turns: Sequence[Turn], role: Role) -> list[str]:
    return [turn.text for turn in turns if turn.role is role]


def assert_contiguous(turns: Sequence[Turn]) -> None:
    assert [turn.index for turn in turns] == list(range(len(turns)))


# -- a greeting, then turns -------------------------------------------------------------------------------

QUESTION = """
name: question
steps:
  - say: "What time do you open?"
agent_replies:
  - say: "We open at half past eight, Monday to Friday."
"""


async def test_greeting_from_cache_then_a_turn_recorded_and_saved(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(QUESTION)
    outcome, twilio = await harness.call(sid, script)

    assert outcome.end is CallEnd.STREAM_STOPPED
    assert not outcome.resumed
    # The greeting plays first, from the very first frames; then the reply.
    assert len(twilio.replies) == 2
    greeting, reply = twilio.replies
    assert greeting.start_ms < twilio.step_started[0]
    assert greeting.played_ms == pytest.approx(speech_ms(harness.agent.greeting), abs=1)
    assert greeting.marks[0].startswith("t0:")
    assert greeting.marks[0].endswith(":first")
    # It came from the phrase cache, which the next call of the process starts with.
    assert len(harness.phrase_store) >= 1 + len(harness.agent.conversation.fillers)
    assert reply.marks[0] == "t2:1:first"
    # Every turn is in DynamoDB, in order, numbered from 0.
    turns = harness.turns(sid)
    assert_contiguous(turns)
    assert [turn.role for turn in turns] == [Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert turns[0].text == harness.agent.greeting
    assert turns[1].text == "what time do you open?"
    assert turns[2].text == "We open at half past eight, Monday to Friday."
    assert not any(turn.interrupted for turn in turns)
    # The context is saved with the history.
    context = await harness.store.load(sid)
    assert context is not None
    assert context.greeted
    assert context.turn_count == 3
    assert [(m.role, m.content) for m in context.messages[1:]] == [
        ("assistant", harness.agent.greeting),
        ("user", "what time do you open?"),
        ("assistant", "We open at half past eight, Monday to Friday."),
    ]
    assert context.messages[0].role == "system"
    # The lease is released.
    assert await harness.redis.get(lease_key(sid)) is None
    # One report per agent turn; the reply's voice-to-voice time is measured at the mark echo.
    assert [report.kind for report in harness.reports] == ["greeting", "reply"]
    measured = harness.reports[1]
    assert measured.v2v_ms is not None
    assert measured.v2v_ms > 0
    assert measured.speculative  # the question looked complete: the reply started before the end of turn
    assert measured.end_of_turn_reason == "complete"
    assert measured.overhead_ms is not None
    assert measured.frames > 0


async def test_a_reply_never_starts_during_a_thinking_pause(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: thinking
pause_ms: 1200
steps:
  - say: "I'd like to book… an appointment."
  - say: "It's five five five… zero one zero zero… two zero zero."
"""
    )
    _, twilio = await harness.call(sid, script)

    assert twilio.pauses, "the script has pauses"
    for start, end in twilio.pauses:
        assert twilio.agent_audio_between(start, end) == 0
    assert harness.providers is not None
    # One LLM request per caller turn: none was started (and dropped) inside a pause.
    assert harness.providers.stats.llm_replies == 2
    assert texts(harness.turns(sid), Role.USER) == [
        "i'd like to book. an appointment.",
        "it's five five five. zero one zero zero. two zero zero.",
    ]


async def test_speculation_dropped_when_the_caller_goes_on(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = new_sid()
    harness.record_call(sid)
    # A 300 ms pause after a complete-looking clause: long enough to speculate, too short to end the turn.
    script = scenario(
        """
name: goes-on
pause_ms: 300
steps:
  - say: "I need an appointment… for my son."
"""
    )
    _, twilio = await harness.call(sid, script)

    providers = harness.providers
    assert providers is not None
    # One reply started on "i need an appointment", dropped unheard; one for the whole sentence.
    assert providers.stats.llm_replies == 2
    assert '"SpeculationDropped":[1.0]' in capsys.readouterr().out
    (start, end) = twilio.pauses[0]
    assert twilio.agent_audio_between(start, end + 200) == 0
    turns = harness.turns(sid)
    assert texts(turns, Role.USER) == ["i need an appointment for my son."]
    # The reply heard was made from the whole sentence.
    assert texts(turns, Role.ASSISTANT)[-1] == "You said: i need an appointment for my son."
    assert len(twilio.replies) == 2


# -- barge-in ---------------------------------------------------------------------------------------------

LONG_ANSWER = (
    "Let me see what we have on Monday. We have openings at half past eight, at nine, at eleven in the morning, "
    "and in the afternoon at two, half past three and four. Which one would suit you best?"
)


async def test_barge_in_cuts_the_history_to_what_was_heard(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        f"""
name: barge
steps:
  - say: "Can I book an appointment for Monday?"
  - say: "Sorry, actually, can I come on Tuesday instead?"
    during_reply_ms: 1500
agent_replies:
  - say: "{LONG_ANSWER}"
  - say: "Of course, Tuesday works."
"""
    )
    _, twilio = await harness.call(sid, script)

    barge_in_at = twilio.step_started[1]
    # The agent stopped within 300 ms of the caller's onset, by a clear.
    assert next(clear for clear in twilio.clears if clear >= barge_in_at) - barge_in_at <= 300
    assert twilio.agent_audio_between(barge_in_at + 300, barge_in_at + 2500) == 0
    turns = harness.turns(sid)
    assert_contiguous(turns)
    interrupted = [turn for turn in turns if turn.interrupted]
    assert len(interrupted) == 1
    cut = interrupted[0]
    assert cut.text == LONG_ANSWER
    assert cut.heard_text
    assert LONG_ANSWER.startswith(cut.heard_text)
    # About 1.5 s of a 65 ms-per-character voice: some words, nowhere near all.
    assert 3 <= len(cut.heard_text.split()) <= 12
    context = await harness.store.load(sid)
    assert context is not None
    assistant = [m.content for m in context.messages if m.role == "assistant"]
    assert cut.heard_text in assistant
    assert LONG_ANSWER not in assistant
    assert texts(turns, Role.USER)[-1] == "sorry, actually, can i come on tuesday instead?"
    assert texts(turns, Role.ASSISTANT)[-1] == "Of course, Tuesday works."


async def test_backchannels_and_noise_do_not_interrupt(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        f"""
name: backchannels
steps:
  - say: "Can you tell me what you have on Monday?"
  - backchannel: "mm-hm"
    during_reply_ms: 2000
  - backchannel: "yeah"
    during_reply_ms: 4500
  - noise: 150
    during_reply_ms: 7000
  - say: "Great, thanks a lot."
agent_replies:
  - say: "{LONG_ANSWER}"
  - say: "You're welcome."
"""
    )
    _, twilio = await harness.call(sid, script)

    turns = harness.turns(sid)
    assert_contiguous(turns)
    assert not any(turn.interrupted for turn in turns)
    # Only the two real turns of the caller reached the conversation.
    assert texts(turns, Role.USER) == ["can you tell me what you have on monday?", "great, thanks a lot."]
    assert texts(turns, Role.ASSISTANT) == [harness.agent.greeting, LONG_ANSWER, "You're welcome."]
    # The long answer played whole: at least its audio, however it was paused for a backchannel.
    reply_start = twilio.step_started[1] - 2000
    reply_end = twilio.step_started[4]
    expected = sum(speech_ms(chunk) for chunk in _chunks(LONG_ANSWER))
    assert twilio.agent_audio_between(reply_start, reply_end) >= expected
    # The noise burst never stopped the agent.
    noise_at = twilio.step_started[3]
    assert not [clear for clear in twilio.clears if noise_at <= clear <= noise_at + 600]


def _chunks(text: str) -> list[str]:
    from streaming.sentences import SentenceAggregator

    aggregator = SentenceAggregator()
    chunks = aggregator.feed(text)
    rest = aggregator.flush()
    return chunks + ([rest] if rest else [])


# -- tools, end of call -----------------------------------------------------------------------------------


async def test_tool_result_is_spoken_and_end_call_closes_after_the_goodbye(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: booking
steps:
  - say: "Tuesday at ten would be great. My name is Sam Taylor."
  - say: "Perfect, thank you. Bye!"
agent_replies:
  - tool:
      name: book_appointment
      arguments: {start: "2026-03-03T10:00", name: "Sam Taylor", reason: "check-up"}
    then: "You're booked for Tuesday at ten in the morning, Sam."
  - say: "You're welcome. Goodbye!"
    tool:
      name: end_call
      arguments: {}
"""
    )
    outcome, twilio = await harness.call(sid, script)

    assert outcome.end is CallEnd.AGENT_ENDED
    booked = harness.tools.of(ToolName.BOOK_APPOINTMENT)
    assert [record.arguments for record in booked] == [
        {"start": "2026-03-03T10:00", "name": "Sam Taylor", "reason": "check-up"}
    ]
    assert len(harness.tools.of(ToolName.END_CALL)) == 1
    turns = harness.turns(sid)
    assert texts(turns, Role.ASSISTANT)[1] == "You're booked for Tuesday at ten in the morning, Sam."
    context = await harness.store.load(sid)
    assert context is not None
    roles = [message.role for message in context.messages]
    assert roles == ["system", "assistant", "user", "assistant", "tool", "assistant", "user", "assistant", "tool"]
    call_message = context.messages[3]
    assert call_message.tool_calls is not None
    assert call_message.tool_calls[0]["function"]["name"] == "book_appointment"
    tool_result = context.messages[4]
    assert tool_result.tool_call_id == call_message.tool_calls[0]["id"]
    assert "booked" in (tool_result.content or "")
    # The goodbye played whole before the socket was closed.
    goodbye = twilio.replies[-1]
    assert goodbye.played_ms == sum(speech_ms(chunk) for chunk in _chunks("You're welcome. Goodbye!"))
    assert twilio.closed_at is not None
    assert twilio.closed_at >= twilio.marks_echoed[-1][0]
    assert twilio.closed_at >= goodbye.intervals[-1][1]


async def test_end_call_without_words_says_the_agents_goodbye(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: hang-up
steps:
  - say: "That's all, bye."
agent_replies:
  - tool:
      name: end_call
      arguments: {}
"""
    )
    outcome, _ = await harness.call(sid, script)
    assert outcome.end is CallEnd.AGENT_ENDED
    assert texts(harness.turns(sid), Role.ASSISTANT)[-1] == harness.agent.conversation.goodbye


async def test_invalid_tool_arguments_are_refused_without_invoking(harness: Harness) -> None:
    class BrokenArguments:
        """The simulated LLM, but the first reply's tool call has arguments that are not a JSON object."""

        def __init__(self, inner: Providers) -> None:
            self.inner = inner

        def for_call(self, agent: AgentConfig, parameters: Mapping[str, str]) -> CallProviders:
            providers = self.inner.for_call(agent, parameters)
            llm = providers.llm
            calls = 0

            class Llm:
                async def reply(
                    self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]
                ) -> AsyncIterator[LlmEvent]:
                    nonlocal calls
                    calls += 1
                    async for event in llm.reply(messages, tools):
                        if calls == 1 and isinstance(event, ToolCall):
                            yield ToolCall(event.call_id, event.name, "[1, 2")
                        else:
                            yield event

            return CallProviders(stt=providers.stt, llm=Llm(), tts=providers.tts)

    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: bad-arguments
steps:
  - say: "Please book Tuesday at ten."
agent_replies:
  - tool:
      name: book_appointment
      arguments: {start: "2026-03-03T10:00"}
    then: "Sorry, let me try that again."
"""
    )
    inner = SimulatedProviders({script.name: script}, LatencyProfile.instant())
    await harness.call(sid, script, providers=BrokenArguments(inner))
    assert harness.tools.invocations == []
    context = await harness.store.load(sid)
    assert context is not None
    tool_message = next(message for message in context.messages if message.role == "tool")
    assert "not a valid JSON object" in (tool_message.content or "")


# -- knowledge base ---------------------------------------------------------------------------------------


class RecordingLlm:
    """Providers whose LLM is the simulated one, recording each request; `first_tool` is asked for first."""

    def __init__(self, inner: Providers, first_tool: ToolCall | None = None) -> None:
        self.inner = inner
        self.first_tool = first_tool
        self.requests: list[tuple[list[ChatMessage], list[Mapping[str, Any]]]] = []

    def for_call(self, agent: AgentConfig, parameters: Mapping[str, str]) -> CallProviders:
        providers = self.inner.for_call(agent, parameters)
        llm, recording = providers.llm, self

        class Llm:
            async def reply(
                self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]
            ) -> AsyncIterator[LlmEvent]:
                recording.requests.append((list(messages), list(tools)))
                if recording.first_tool is not None and len(recording.requests) == 1:
                    yield recording.first_tool
                    return
                async for event in llm.reply(messages, tools):
                    yield event

        return CallProviders(stt=providers.stt, llm=Llm(), tts=providers.tts)


PARKING_QUESTION = """
name: parking
steps:
  - say: "Where can I park my car?"
agent_replies:
  - say: "There is free parking behind the building."
"""


async def test_the_knowledge_base_answers_every_turn_without_entering_the_history(harness: Harness) -> None:
    harness.knowledge = load_knowledge([harness.agent])
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(PARKING_QUESTION)
    providers = RecordingLlm(SimulatedProviders({script.name: script}, LatencyProfile.instant()))
    await harness.call(sid, script, providers=providers)

    messages, tools = providers.requests[-1]
    assert messages[0].role == "system"
    assert messages[0].content == harness.agent.system_prompt.strip()  # the whole base is not pasted in
    assert messages[1].role == "system"
    assert "Address and parking" in (messages[1].content or "")
    assert SEARCH_TOOL not in [tool["function"]["name"] for tool in tools]
    context = await harness.store.load(sid)
    assert context is not None
    assert not any("Address and parking" in (message.content or "") for message in context.messages)


async def test_the_knowledge_base_as_a_tool_is_answered_in_the_service(harness: Harness) -> None:
    harness.agent = harness.agent.model_copy(update={"knowledge_search": "tool"})
    harness.knowledge = load_knowledge([harness.agent])
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(PARKING_QUESTION)
    search = ToolCall("call_kb", SEARCH_TOOL, '{"query": "parking"}')
    providers = RecordingLlm(SimulatedProviders({script.name: script}, LatencyProfile.instant()), first_tool=search)
    await harness.call(sid, script, providers=providers)

    first_messages, first_tools = providers.requests[0]
    assert SEARCH_TOOL in [tool["function"]["name"] for tool in first_tools]
    assert not any("Address and parking" in (message.content or "") for message in first_messages)
    assert harness.tools.invocations == []  # never sent to the tool Lambda
    answered, _ = providers.requests[1]
    assert answered[-1].role == "tool"
    assert answered[-1].tool_call_id == "call_kb"
    assert "Address and parking" in (answered[-1].content or "")


# -- idle, keypad, max duration ----------------------------------------------------------------------------


async def test_idle_caller_is_reprompted_then_the_call_ends(harness: Harness) -> None:
    harness.agent = receptionist(idle_reprompt_s=2, idle_hangup_s=2)
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: idle
steps:
  - say: "Hi, I have a question about my bill."
  - wait_silent: 30000
agent_replies:
  - say: "Of course. What would you like to know?"
"""
    )
    outcome, twilio = await harness.call(sid, script)

    assert outcome.end is CallEnd.IDLE
    conversation = harness.agent.conversation
    assert texts(harness.turns(sid), Role.ASSISTANT)[-2:] == [conversation.idle_reprompt, conversation.goodbye]
    # Reprompt 2 s after the answer stopped playing; goodbye 2 s after the reprompt did.
    answer, reprompt, goodbye = twilio.replies[-3:]
    assert 2000 <= reprompt.start_ms - answer.intervals[-1][1] <= 2100
    assert 2000 <= goodbye.start_ms - reprompt.intervals[-1][1] <= 2100
    assert goodbye.played_ms == pytest.approx(speech_ms(conversation.goodbye), abs=1)
    call = harness.records.get_call(sid)
    assert call is not None
    assert call.conversation_ended == "idle"


async def test_keypad_digits_reach_the_agent(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: keypad
steps:
  - say: "I'd like to check my appointment."
  - dtmf: "4215#"
agent_replies:
  - say: "Please key in your patient number, then press the pound key."
"""
    )
    _, twilio = await harness.call(sid, script)

    turns = harness.turns(sid)
    assert texts(turns, Role.USER)[-1] == "[keypad] 4 2 1 5 #"
    assert texts(turns, Role.ASSISTANT)[-1] == "You said: [keypad] 4 2 1 5 #"
    # '#' ends the turn at once: the answer is heard well within a second of the last key.
    last_key = twilio.step_started[1] + 3 * 150
    assert twilio.replies[-1].start_ms - last_key < 1000


async def test_max_call_duration_says_goodbye_and_ends(harness: Harness) -> None:
    harness.agent = receptionist(max_call_s=30, idle_reprompt_s=120)
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: long
steps:
  - say: "Tell me about the clinic."
  - wait_silent: 60000
"""
    )
    outcome, twilio = await harness.call(sid, script)

    assert outcome.end is CallEnd.MAX_DURATION
    goodbye = twilio.replies[-1]
    assert 30_000 <= goodbye.start_ms <= 30_100
    assert texts(harness.turns(sid), Role.ASSISTANT)[-1] == harness.agent.conversation.goodbye
    call = harness.records.get_call(sid)
    assert call is not None
    assert call.conversation_ended == "max_duration"


# -- resume, failures, the lease --------------------------------------------------------------------------

DROP = """
name: drop
steps:
  - say: "Hi, I'd like to book an appointment."
  - say: "Thursday afternoon, please."
  - drop_socket: {resume_after_ms: 500}
  - say: "Hello? Was that Thursday afternoon?"
agent_replies:
  - say: "Of course. Which day would suit you?"
  - say: "On Thursday afternoon I have half past two or four o'clock."
  - say: "Yes, Thursday afternoon, at half past two or at four."
"""


async def test_resume_after_a_dropped_stream_continues_the_conversation(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(DROP)
    first, before = await harness.call(sid, script)
    assert first.end is CallEnd.STREAM_CLOSED
    assert before.dropped
    assert first.next_turn == 5  # greeting, two turns of each

    runs = sum(len(sound.runs) for i in range(3) if (sound := script.sound(i)) is not None)
    second, after = await harness.call(sid, script, first_step=3, sound_runs=runs)

    assert second.resumed
    assert second.end is CallEnd.STREAM_STOPPED
    # No greeting on the resumed stream: the first audio is the answer to the caller.
    assert len(after.replies) == 1
    assert after.replies[0].start_ms > after.step_started[3]
    assert after.replies[0].marks[0].startswith("t6:")
    turns = harness.turns(sid)
    assert_contiguous(turns)
    assert [turn.role for turn in turns] == [Role.ASSISTANT, Role.USER] * 3 + [Role.ASSISTANT]
    assert texts(turns, Role.ASSISTANT)[-1] == "Yes, Thursday afternoon, at half past two or at four."
    context = await harness.store.load(sid)
    assert context is not None
    assert context.turn_count == len(turns) == 7


async def test_resume_waits_for_the_old_streams_lease(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(QUESTION)
    # Another task still holds the lease for a moment (the old stream finishing).
    held = await harness.store.acquire_lease(sid, "old-task", 5_000)
    assert held is not None

    async def let_go() -> None:
        await asyncio.sleep(0.3)
        await harness.store.release(held)

    releasing = asyncio.create_task(let_go())
    outcome, twilio = await harness.call(sid, script)
    await releasing
    assert outcome.end is CallEnd.STREAM_STOPPED
    assert len(twilio.replies) == 2


async def test_lease_unavailable_closes_the_stream(harness: Harness) -> None:
    harness.lease_ttl_ms = 500
    sid = new_sid()
    harness.record_call(sid)
    assert await harness.store.acquire_lease(sid, "someone-else", 10_000) is not None
    outcome, twilio = await harness.call(sid, scenario(QUESTION))
    assert outcome.end is CallEnd.LEASE_UNAVAILABLE
    assert twilio.closed_at is not None
    assert twilio.replies == []


async def test_a_provider_error_is_apologized_for_and_the_call_goes_on(harness: Harness) -> None:
    class FailingOnce:
        def __init__(self, inner: Providers) -> None:
            self.inner = inner
            self.failures = 0

        def for_call(self, agent: AgentConfig, parameters: Mapping[str, str]) -> CallProviders:
            providers = self.inner.for_call(agent, parameters)
            llm = providers.llm
            outer = self

            class Llm:
                async def reply(
                    self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]
                ) -> AsyncIterator[LlmEvent]:
                    if sum(message.role == "user" for message in messages) == 1:
                        outer.failures += 1
                        raise ConnectionError("the model is down")
                    async for event in llm.reply(messages, tools):
                        yield event

            return CallProviders(stt=providers.stt, llm=Llm(), tts=providers.tts)

    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: failing
steps:
  - say: "What time do you open?"
  - say: "What time do you open?"
agent_replies:
  - say: "Never said."
  - say: "We open at half past eight."
"""
    )
    providers = FailingOnce(SimulatedProviders({script.name: script}, LatencyProfile.instant()))
    outcome, twilio = await harness.call(sid, script, providers=providers)

    assert providers.failures >= 1
    assert outcome.end is CallEnd.STREAM_STOPPED
    assistant = texts(harness.turns(sid), Role.ASSISTANT)
    assert assistant[1] == APOLOGY
    assert assistant[2] == "We open at half past eight."
    assert len(twilio.replies) == 3


async def test_losing_the_lease_stops_the_engine(harness: Harness) -> None:
    harness.lease_ttl_ms = 400
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: taken-over
steps:
  - say: "What time do you open?"
  - wait_silent: 60000
"""
    )

    async def take_over() -> None:
        # Wait until the engine holds the lease, then another task takes the call.
        for _ in range(1000):
            if await harness.redis.get(lease_key(sid)) is not None:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await harness.redis.set(lease_key(sid), "another-task")

    taking = asyncio.create_task(take_over())
    outcome, twilio = await harness.call(sid, script)
    await taking
    assert outcome.end is CallEnd.LEASE_LOST
    assert twilio.closed_at is not None
    assert twilio.closed_at < 60_000
    # The other task's lease is left alone.
    assert await harness.redis.get(lease_key(sid)) == b"another-task"


async def test_unknown_call_is_closed(harness: Harness) -> None:
    outcome, twilio = await harness.call(new_sid(), scenario(QUESTION))
    assert outcome.end is CallEnd.UNKNOWN_CALL
    assert twilio.closed_at is not None


# -- fillers, transfers, provider failures, events ---------------------------------------------------------


async def test_a_filler_plays_when_the_first_sentence_is_late(harness: Harness) -> None:
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: slow-model
steps:
  - say: "What time do you open?"
  - say: "And when do you close?"
agent_replies:
  - say: "We open at half past eight."
  - say: "We close at half past five."
"""
    )
    # The model takes half a second of wall time: ten seconds of this call's audio at its speed.
    slow = LatencyProfile.instant().model_copy(update={"llm_first_token_ms": 500.0})
    providers = SimulatedProviders({script.name: script}, slow)
    _, twilio = await harness.call(sid, script, providers=providers)

    replies = [report for report in harness.reports if report.kind == "reply"]
    assert [report.filler_played for report in replies] == [True, True]
    fillers = harness.agent.conversation.fillers
    first, second = twilio.replies[1], twilio.replies[2]
    # Each answer starts with a filler (they take turns), then the answer itself, in one stretch of audio.
    assert first.marks[0].endswith(":filler")
    assert second.marks[0].endswith(":filler")
    assert first.intervals[0][1] - first.intervals[0][0] >= speech_ms(fillers[0])
    assert second.intervals[0][1] - second.intervals[0][0] >= speech_ms(fillers[1])
    context = await harness.store.load(sid)
    assert context is not None
    said = " ".join(m.content or "" for m in context.messages if m.role == "assistant")
    assert not any(filler in said for filler in fillers)


async def test_transfer_speaks_first_then_moves_the_call(harness: Harness) -> None:
    clock: dict[str, int] = {}

    class TimedTools(ScriptedToolActions):
        twilio: FakeTwilio | None = None

        async def invoke(self, call_sid: str, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
            assert self.twilio is not None
            clock[tool] = self.twilio.now_ms
            return await super().invoke(call_sid, tool, arguments)

    tools = TimedTools()
    harness.tools = tools
    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: transfer
steps:
  - say: "Can I talk to someone at the front desk?"
agent_replies:
  - say: "Of course. Let me put you through to the front desk now."
    tool:
      name: transfer_call
      arguments: {to: "front_desk"}
    then: "Never said."
"""
    )
    twilio = FakeTwilio(script)
    tools.twilio = twilio
    outcome, twilio = await harness.call(sid, script, twilio=twilio)

    assert outcome.end is CallEnd.STREAM_STOPPED
    assert [record.arguments for record in tools.of(ToolName.TRANSFER_CALL)] == [{"to": "front_desk"}]
    reply = twilio.replies[-1]
    last_mark_at = max(at for at, name in twilio.marks_echoed if name in reply.marks)
    assert clock["transfer_call"] >= last_mark_at >= reply.intervals[-1][1]
    turns = harness.turns(sid)
    assert texts(turns, Role.ASSISTANT)[-1] == "Of course. Let me put you through to the front desk now."


async def test_a_failed_speech_session_is_reopened(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    class BrokenSession:
        async def send_audio(self, pcm16: bytes) -> None:
            return None

        async def transcripts(self) -> AsyncIterator[Transcript]:
            raise ConnectionError("the transcription stream broke")
            yield  # an async generator that fails at once

        async def aclose(self) -> None:
            return None

    class FirstSessionBreaks:
        def __init__(self, inner: Providers) -> None:
            self.inner = inner
            self.sessions = 0

        def for_call(self, agent: AgentConfig, parameters: Mapping[str, str]) -> CallProviders:
            providers = self.inner.for_call(agent, parameters)
            stt = providers.stt
            outer = self

            class Stt:
                async def start(self, *, language: str, vocabulary: str | None = None) -> SpeechSession:
                    outer.sessions += 1
                    if outer.sessions == 1:
                        return BrokenSession()
                    return await stt.start(language=language)

            return CallProviders(stt=Stt(), llm=providers.llm, tts=providers.tts)

    sid = new_sid()
    harness.record_call(sid)
    script = scenario(QUESTION)
    providers = FirstSessionBreaks(SimulatedProviders({script.name: script}, LatencyProfile.instant()))
    outcome, _ = await harness.call(sid, script, providers=providers)

    assert providers.sessions == 2
    assert outcome.end is CallEnd.STREAM_STOPPED
    assert texts(harness.turns(sid), Role.USER) == ["what time do you open?"]
    assert '"kind":"stt"' in capsys.readouterr().out


async def test_a_speech_synthesis_failure_is_apologized_for(harness: Harness) -> None:
    class BreaksOn:
        def __init__(self, inner: Providers, text: str) -> None:
            self.inner = inner
            self.text = text

        def for_call(self, agent: AgentConfig, parameters: Mapping[str, str]) -> CallProviders:
            providers = self.inner.for_call(agent, parameters)
            tts = providers.tts
            text = self.text

            class Tts:
                async def synthesize(self, said: str, *, voice: Voice, language: str) -> AsyncIterator[bytes]:
                    if said == text:
                        raise ConnectionError("Polly is down")
                    async for piece in tts.synthesize(said, voice=voice, language=language):
                        yield piece

            synthesizer: TextToSpeech = Tts()
            return CallProviders(stt=providers.stt, llm=providers.llm, tts=synthesizer)

    sid = new_sid()
    harness.record_call(sid)
    script = scenario(
        """
name: tts-down
steps:
  - say: "What time do you open?"
  - say: "And when do you close?"
agent_replies:
  - say: "We open at half past eight."
  - say: "We close at half past five."
"""
    )
    providers = BreaksOn(
        SimulatedProviders({script.name: script}, LatencyProfile.instant()), "We open at half past eight."
    )
    outcome, _ = await harness.call(sid, script, providers=providers)

    assert outcome.end is CallEnd.STREAM_STOPPED
    assistant = texts(harness.turns(sid), Role.ASSISTANT)
    assert assistant[1].endswith(APOLOGY)
    assert assistant[2] == "We close at half past five."
    context = await harness.store.load(sid)
    assert context is not None
    # Only what was said reaches the history: the apology, not the sentence that could not be spoken.
    assert [m.content for m in context.messages if m.role == "assistant"][1] == APOLOGY


async def test_every_turn_is_announced_in_order(harness: Harness) -> None:
    class RecordingEvents(CallEvents):
        def __init__(self) -> None:
            super().__init__("test-bus")
            self.sent: list[CallEvent] = []

        def emit(self, event: CallEvent) -> None:
            self.sent.append(event)

    events = RecordingEvents()
    harness.events = events
    sid = new_sid()
    harness.record_call(sid)
    await harness.call(sid, scenario(QUESTION))
    assert [(event.type.value, event.facts["turn"], event.facts["role"]) for event in events.sent] == [
        ("TurnCompleted", 0, "assistant"),
        ("TurnCompleted", 1, "user"),
        ("TurnCompleted", 2, "assistant"),
    ]
    assert all(event.call_sid == sid for event in events.sent)
    # Names the call and the turn, never what was said.
    assert all(set(event.facts) == {"turn", "role", "interrupted"} for event in events.sent)


@pytest.mark.parametrize("profile", ["instant", "reference"])
@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name in shipped_scenarios()
        if not any(isinstance(step, DropSocket) for step in shipped_scenarios()[name].steps)
    ),
)
async def test_shipped_scenarios_hold_the_conversation_rules(harness: Harness, name: str, profile: str) -> None:
    """Every shipped scenario (the resumed one has its own test): one user turn per spoken or keyed turn,
    nothing from backchannels or noise, no agent audio in a thinking pause, turns numbered without gaps.

    With the reference profile's latencies too, scaled to this test's clock (about 20 times real time).
    """
    script = shipped_scenarios()[name]
    harness.agent = load_agent(REPO / "agents" / f"{script.agent}.yaml")
    sid = new_sid()
    harness.record_call(sid)
    latency = LatencyProfile.instant() if profile == "instant" else LatencyProfile.reference().scaled(20)
    providers = SimulatedProviders({script.name: script}, latency)
    outcome, twilio = await harness.call(sid, script, providers=providers)

    turns = harness.turns(sid)
    assert_contiguous(turns)
    said = [step for step in script.steps if isinstance(step, Say | DtmfStep)]
    assert len(texts(turns, Role.USER)) == len(said)
    for start, end in twilio.pauses:
        assert twilio.agent_audio_between(start, end) == 0
    assert outcome.end in (CallEnd.STREAM_STOPPED, CallEnd.AGENT_ENDED, CallEnd.IDLE)
    context = await harness.store.load(sid)
    assert context is not None
    assert context.turn_count == len(turns)


def test_the_payload_is_base64_on_the_wire() -> None:
    # The double skips JSON; this pins that the engine sees what parse_inbound would give it.
    from streaming.protocol import parse_inbound

    payload = base64.b64encode(SILENT_FRAME).decode()
    message = parse_inbound(
        '{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":'
        f'{{"track":"inbound","chunk":"1","timestamp":"0","payload":"{payload}"}}}}'
    )
    assert isinstance(message, Media)
    assert message.media.payload == SILENT_FRAME
    assert timedelta(milliseconds=message.media.timestamp) == timedelta(0)
