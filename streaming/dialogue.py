"""Who speaks when: the caller's turns end, the agent's turns start, play, are interrupted and finish.

The call engine (call.py) feeds a Dialogue what the stream brings, in stream time: each frame's VAD result
(`on_frame`), transcripts, keypad digits and mark echoes. The Dialogue decides, with the TurnDetector
(end of turn, speculation) and the BargeInJudge (tentative stop, resume, real interruption), and acts:

- the caller's turn ends → it is committed (history, DynamoDB) and a Reply runs, or the speculative one
  already running on the same words is released;
- the agent's turn (a Reply, or a cached phrase: greeting, reprompt, goodbye) finishes when its audio
  has played, or is interrupted → committed with what the caller heard;
- timers on stream time: the idle reprompt and hang-up, the call's maximum duration.

It also is the Reply's host (ReplyHost). All of it runs on the call's event loop; nothing here blocks.
"""

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from streaming.audio.vad import SpeechSegmenter, SpeechStarted, SpeechStopped, VadEvent
from streaming.barge_in import INTERRUPT, PAUSE, RESUME, BargeInAction, BargeInJudge, BargeInSettings
from streaming.blocking import run_blocking
from streaming.conversation import Conversation
from streaming.knowledge import KnowledgeBase, search_tool_schema
from streaming.phrases import PhraseCache
from streaming.playback import Clip, ClipKind, Playback, heard_part
from streaming.providers.base import CallProviders, Transcript
from streaming.reply import Reply, ReplyEnd
from streaming.stream_clock import StreamClock
from streaming.telemetry import FrameLag, TurnReport, count, count_end_of_turn, count_error, publish_turn
from streaming.tools import ToolActions
from streaming.turn import (
    NEVER,
    Decision,
    EndOfTurn,
    EndOfTurnReason,
    Speculate,
    TurnDetector,
    TurnTiming,
    same_words,
)
from switchboard.agent import AgentConfig
from switchboard.observability import logger
from switchboard.records import CallNotFound, CallRecords
from switchboard.state import ChatMessage

# After a backchannel, its late transcripts (ending up to this long after the speech) are dropped.
_DISCARD_SLACK_MS: Final = 150
# How long past the estimated end of playout to wait for the last mark before giving up on it.
_DRAIN_MARGIN_MS: Final = 2_000
_KEYPAD_REASONS: Final = frozenset({EndOfTurnReason.KEYPAD, EndOfTurnReason.KEYPAD_TERMINATOR})

Spawner = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


class CallEnd(StrEnum):
    STREAM_STOPPED = "stream_stopped"  # Twilio sent `stop` (hang-up, transfer, or the stream was stopped)
    STREAM_CLOSED = "stream_closed"  # the socket went without a stop: /twilio/stream-ended resumes it
    AGENT_ENDED = "agent_ended"  # end_call
    IDLE = "idle"  # the caller said nothing after the reprompt
    MAX_DURATION = "max_duration"
    LEASE_LOST = "lease_lost"  # another task drives the call now
    LEASE_UNAVAILABLE = "lease_unavailable"  # another task held it for longer than the lease TTL
    UNKNOWN_CALL = "unknown_call"  # no record, its agent is not deployed here, or no providers for it
    FAILED = "failed"  # a bug in the engine (logged)


class CallEnded(Exception):
    """Raised in any task of the call to end it: the call's TaskGroup then cancels the others."""

    def __init__(self, end: CallEnd) -> None:
        super().__init__(end.value)
        self.end = end


@dataclass(eq=False, slots=True)
class _AgentTurn:
    index: int
    kind: str  # "reply", "greeting", "reprompt", "goodbye"
    report: TurnReport
    started_at: datetime
    text: str = ""
    reply: Reply | None = None
    user_text: str = ""  # what a speculative reply answers
    clips: list[Clip] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    ending: CallEnd | None = None
    conversation_end: str | None = None  # end_conversation reason to record while saying goodbye
    finished: bool = False


class Dialogue:
    """The conversation logic of one stream of a call. See the module docstring."""

    def __init__(
        self,
        *,
        call_sid: str,
        agent: AgentConfig,
        providers: CallProviders,
        tools: ToolActions,
        records: CallRecords,
        phrases: PhraseCache,
        conversation: Conversation,
        clock: StreamClock,
        playback: Playback,
        segmenter: SpeechSegmenter,
        lag: FrameLag,
        wall: Callable[[], float],
        spawn: Spawner,
        timing: TurnTiming,
        barge_in: BargeInSettings,
        on_turn: Callable[[TurnReport], None] | None,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self.call_sid = call_sid
        self._agent = agent
        self._knowledge = knowledge
        self._providers = providers
        self._tools = tools
        self._records = records
        self._phrases = phrases
        self._conversation = conversation
        self.clock = clock
        self._playback = playback
        self.segmenter = segmenter
        self.lag = lag
        self.wall = wall
        self._spawner = spawn
        self._on_turn = on_turn
        self.detector = TurnDetector(timing)
        self.judge = BargeInJudge(barge_in)
        self.epoch = datetime.now(UTC)  # the wall time of stream ms 0, set by the engine at the first frame
        self._playback_changed = asyncio.Event()
        self._turn: _AgentTurn | None = None
        self._spec: _AgentTurn | None = None
        self._closing = False
        self._echo_floor = False
        self._last_voiced_ms = -1
        self._last_voiced_wall = 0.0
        self._text_wall = 0.0
        self._digit_wall = 0.0
        self._speech_end_ms = 0
        self._timer_at = NEVER
        self._idle_at = NEVER
        self._idle_stage = 0
        self._max_at = NEVER
        self._fillers = itertools.count()
        self._tool_schemas: list[dict[str, Any]] | None = None

    @property
    def playback(self) -> Playback:
        return self._playback

    # -- the per-frame path -----------------------------------------------------------------------------

    def on_frame(self, events: list[VadEvent], now: int, wall: float) -> None:
        """After the VAD took a frame ending at `now`: keep this to compares, it runs 50 times a second."""
        if events:
            for event in events:
                self._on_vad(event, now)
        segmenter = self.segmenter
        if segmenter.speaking:
            voiced = segmenter.last_voiced_end_ms
            if voiced is not None and voiced != self._last_voiced_ms:
                self._last_voiced_ms = voiced
                self._last_voiced_wall = wall
                self.detector.last_voiced_end_ms = voiced
            if self._turn is not None and not self._closing:
                judge = self.judge
                if voiced == now:
                    action = judge.voiced(segmenter.voiced_ms_in_current_segment)
                elif judge.tentative:
                    action = judge.quiet(self.detector.text, now - self._last_voiced_ms)
                else:
                    action = None
                if action is not None:
                    self._barge_in(action, now)
        if now >= self.detector.next_check_ms:
            self._decide(self.detector.poll(now))
        if now >= self._timer_at:
            self._on_timers(now)

    def begin(self) -> None:
        """The stream is live: greet (a first stream) or listen (a resumed one); the call's time limit runs."""
        conversation, agent = self._conversation, self._agent
        context = conversation.context
        elapsed_s = (datetime.now(UTC) - context.started_at).total_seconds()
        self._max_at = self.clock.now_ms + max(0, int((agent.conversation.max_call_s - elapsed_s) * 1000))
        if not context.greeted:
            self._start_phrase_turn("greeting", agent.greeting)
        else:
            self._arm_idle(agent.conversation.idle_reprompt_s)
        self._update_timer()

    def finish_open_turns(self) -> None:
        """The stream is over: what the agent was saying is committed as far as it played."""
        self._drop_spec()
        turn = self._turn
        if turn is not None:
            if turn.task is not None:
                turn.task.cancel()
            position = self._playback.played_position(self.clock.now_ms)
            self._finish_turn(turn, interrupted=position < self._playback.length, position=position)

    def _on_vad(self, event: SpeechStarted | SpeechStopped, now: int) -> None:
        agent_holds_floor = self._turn is not None or self._closing
        if isinstance(event, SpeechStarted):
            self.detector.speech_started(event.at_ms)
            return
        self.detector.speech_stopped(event.at_ms, event.voiced_ms)
        self._speech_end_ms = event.at_ms
        if not agent_holds_floor:
            return
        if self.judge.tentative and not self._closing:
            self._barge_in(self.judge.speech_stopped(event.voiced_ms, self.detector.text, now), now)
            self._update_timer()
        elif not self.judge.tentative:
            # Too short to stop the agent ("mm-hm", a cough), or a backchannel the agent already resumed
            # after: either way not a turn.
            self.detector.discard(event.at_ms + _DISCARD_SLACK_MS)
            if event.voiced_ms < self.judge.settings.min_voiced_ms:
                count("BackchannelsIgnored")

    def on_transcript(self, result: Transcript, offset_ms: int) -> None:
        """One STT result; `offset_ms` is where the STT session's audio time starts on the stream."""
        if logger.log_level <= logging.DEBUG:  # transcripts never go to logs above DEBUG
            logger.debug("transcript", extra={"text": result.text, "final": result.is_final})
        detector = self.detector
        version = detector.text_version
        decision = detector.transcript(result, self.clock.now_ms, offset_ms)
        if detector.text_version != version:
            self._text_wall = self.wall()
            spec = self._spec
            if spec is not None and not same_words(spec.user_text, detector.text):
                self._drop_spec()
            if self._turn is not None and self.judge.tentative:
                now = self.clock.now_ms
                self._barge_in(self.judge.transcript(detector.text, now - self._last_voiced_ms), now)
        self._decide(decision)

    def on_dtmf(self, digit: str) -> None:
        if self._closing:
            return
        if self._turn is not None:
            self._interrupt(self.clock.now_ms)
        self._digit_wall = self.wall()
        self._idle_at = NEVER
        self._update_timer()
        self._decide(self.detector.keypad(digit, self.clock.now_ms))

    def on_mark(self, name: str) -> None:
        echo = self._playback.mark_echoed(name, self.clock.now_ms)
        if echo is None:
            return
        if echo.first:
            turn = self._turn
            if turn is not None and turn.index == echo.clip.turn and turn.report.first_mark_echo is None:
                turn.report.first_mark_echo = self.wall()
        self._playback_moved()

    def _decide(self, decision: Decision | None) -> None:
        if decision is None:
            return
        if isinstance(decision, Speculate):
            if self._turn is None and self._spec is None and not self._closing:
                self._start_reply(decision.text, speculative=True)
            return
        self._end_of_turn(decision)

    def _end_of_turn(self, decision: EndOfTurn) -> None:
        logger.info(
            "end of turn",
            extra={"reason": decision.reason.value, "wait_ms": decision.wait_ms, "speculated": self._spec is not None},
        )
        count_end_of_turn(decision.reason.value)
        if self._closing:
            return
        if self._turn is not None:
            self._interrupt(decision.decided_ms)
        conversation = self._conversation
        keypad = decision.reason in _KEYPAD_REASONS
        speech_end_wall = self._digit_wall if keypad else self._last_voiced_wall
        started = decision.speech_start_ms if decision.speech_start_ms is not None else decision.speech_end_ms
        conversation.commit_user(decision.text, started_at=self._at(started), ended_at=self._at(decision.speech_end_ms))
        self._idle_stage = 0
        self._idle_at = NEVER
        self._update_timer()
        spec = self._spec
        now_wall = self.wall()
        if (
            spec is not None
            and spec.reply is not None
            and same_words(spec.user_text, decision.text)
            and spec.index == conversation.next_index
            and spec.reply.failed is None
            and spec.task is not None
            and not spec.task.done()
        ):
            self._spec = None
            self._turn = spec
            spec.started_at = datetime.now(UTC)
            turn = spec
            spec.reply.release(decision.decided_ms)
            self._playback.release(decision.decided_ms)
        else:
            self._drop_spec()
            turn = self._start_reply(decision.text, speculative=False)
            turn.report.transcript_ready = self._digit_wall if keypad else self._text_wall
        report = turn.report
        report.speech_end = speech_end_wall
        report.end_of_turn = now_wall
        report.end_of_turn_reason = decision.reason.value

    def _start_reply(self, user_text: str, *, speculative: bool) -> _AgentTurn:
        conversation, agent, providers = self._conversation, self._agent, self._providers
        index = conversation.next_index + (1 if speculative else 0)
        messages = list(conversation.messages)
        if speculative:
            messages.append(ChatMessage(role="user", content=user_text))
        report = TurnReport(self.call_sid, index, "reply", speculative=speculative)
        report.reply_start = self.wall()
        if speculative:
            report.transcript_ready = self._text_wall
        reply = Reply(
            host=self,
            call_sid=self.call_sid,
            turn=index,
            agent=agent,
            llm=providers.llm,
            tts=providers.tts,
            tools=self._tools,
            messages=messages,
            report=report,
            released_at_ms=None if speculative else self.clock.now_ms,
            schemas=self._schemas(),
            knowledge=self._knowledge,
        )
        turn = _AgentTurn(index, "reply", report, datetime.now(UTC), reply=reply, user_text=user_text)
        if speculative:
            self._playback.hold()
            self._spec = turn
        else:
            self._turn = turn
        turn.task = self._spawn(self._run_turn(turn), f"reply:{index}")
        return turn

    def _schemas(self) -> list[dict[str, Any]]:
        """The agent's tool schemas, built once per call: every reply of the call offers the same tools."""
        if self._tool_schemas is None:
            schemas = self._tools.schemas(self._agent)
            if self._knowledge is not None and self._agent.knowledge_search == "tool":
                schemas = [*schemas, search_tool_schema()]
            self._tool_schemas = schemas
        return self._tool_schemas

    def _drop_spec(self) -> None:
        spec, self._spec = self._spec, None
        if spec is None:
            return
        if spec.task is not None:
            spec.task.cancel()
        if self._turn is None:
            self._playback.reset()
        count("SpeculationDropped")

    def _start_phrase_turn(
        self, kind: str, text: str, *, ending: CallEnd | None = None, conversation_end: str | None = None
    ) -> _AgentTurn:
        conversation = self._conversation
        index = conversation.next_index
        turn = _AgentTurn(
            index,
            kind,
            TurnReport(self.call_sid, index, kind),
            datetime.now(UTC),
            text=text,
            ending=ending,
            conversation_end=conversation_end,
        )
        self._turn = turn
        turn.task = self._spawn(self._run_turn(turn), f"{kind}:{index}")
        return turn

    async def _run_turn(self, turn: _AgentTurn) -> None:
        ending = turn.ending
        recording: asyncio.Task[None] | None = None
        if turn.conversation_end is not None:
            recording = asyncio.create_task(self._end_conversation(turn.conversation_end))
        try:
            if turn.reply is not None:
                end = await turn.reply.run()
                if end is ReplyEnd.END_CALL:
                    ending = CallEnd.AGENT_ENDED
            else:
                await self._speak_phrase(turn)
            if recording is not None:
                await recording
        except asyncio.CancelledError:
            if recording is not None:
                recording.cancel()
            raise
        except Exception:
            logger.exception("an agent turn failed")
            count_error("engine")
        if turn is self._turn:
            self._finish_turn(turn, interrupted=False)
        if ending is not None:
            raise CallEnded(ending)

    async def _speak_phrase(self, turn: _AgentTurn) -> None:
        try:
            audio = await self._phrases.get(turn.text)
        except Exception:
            logger.exception("could not synthesize a phrase", extra={"kind": turn.kind})
            count_error("tts")
            turn.text = ""
            return
        playback = self._playback
        clip = playback.open_clip(turn=turn.index, index=0, kind=ClipKind.SPEECH, text=turn.text, first=True)
        turn.clips.append(clip)
        playback.append(clip, audio, self.clock.now_ms)
        playback.close(clip, self.clock.now_ms)
        await self.wait_drained()

    async def _end_conversation(self, reason: str) -> None:
        try:
            await run_blocking(self._records.end_conversation, self.call_sid, reason)
        except CallNotFound:
            logger.warning("no call record to mark the conversation ended on", extra={"reason": reason})
        except Exception:
            logger.exception("could not mark the conversation ended", extra={"reason": reason})
            count_error("records")

    def _finish_turn(self, turn: _AgentTurn, *, interrupted: bool, position: int | None = None) -> None:
        if turn.finished:
            return
        turn.finished = True
        if self._turn is turn:
            self._turn = None
        conversation = self._conversation
        playback = self._playback
        if position is None:
            position = playback.cut_position if playback.cut_position is not None else playback.length
        reply = turn.reply
        if reply is not None:
            text = reply.text
            heard_text = playback.heard_text(reply.clips, position) if interrupted else None
            messages = reply.history((lambda clip: heard_part(clip, position)) if interrupted else None)
        else:
            text = turn.text
            heard_text = playback.heard_text(turn.clips, position) if interrupted else None
            said = heard_text if interrupted else text
            messages = [ChatMessage(role="assistant", content=said)] if said else []
        if text or messages:
            conversation.commit_agent(
                text,
                messages=messages,
                interrupted=interrupted,
                heard=heard_text,
                started_at=turn.started_at,
                ended_at=datetime.now(UTC),
                greeting=turn.kind == "greeting",
            )
        elif turn.kind == "greeting":
            conversation.mark_greeted()
        report = turn.report
        report.interrupted = interrupted
        self._report(report)
        playback.reset()
        self.judge.reset()
        self._playback_moved()
        agent = self._agent
        if not self._closing:
            stage_wait = agent.conversation.idle_hangup_s if self._idle_stage else agent.conversation.idle_reprompt_s
            self._arm_idle(stage_wait)

    def _report(self, report: TurnReport) -> None:
        lag = self.lag
        report.frames = lag.frames
        report.frame_lag_p50_ms = lag.percentile(0.5)
        report.frame_lag_p99_ms = lag.percentile(0.99)
        report.frame_lag_max_ms = lag.max_ms
        lag.restart()
        logger.info("agent turn", extra=report.as_log())
        if report.kind == "reply":
            publish_turn(report)
        if self._on_turn is not None:
            try:
                self._on_turn(report)
            except Exception:
                logger.exception("the on_turn observer failed")

    def _barge_in(self, action: BargeInAction | None, now: int) -> None:
        if action is None or self._turn is None:
            return
        if action is PAUSE:
            self._playback.cut(now)
            self._playback_moved()
            logger.info("caller speech over the agent: audio stopped", extra={"turn": self._turn.index})
        elif action is RESUME:
            self._playback.resume(now)
            self.detector.discard(max(self._speech_end_ms, self._last_voiced_ms) + _DISCARD_SLACK_MS)
            self._playback_moved()
            count("BackchannelsIgnored")
            logger.info("a backchannel, not an interruption: the agent goes on", extra={"turn": self._turn.index})
        elif action is INTERRUPT:
            self._interrupt(now)
        self._update_timer()

    def _interrupt(self, now: int, *, by_caller: bool = True) -> None:
        """Stop the agent now (a real barge-in, or the call ending), cancel its work, keep in history what
        the caller heard."""
        turn = self._turn
        if turn is None:
            return
        if self._playback.cut_position is None:
            self._playback.cut(now)
        if turn.task is not None:
            turn.task.cancel()
        self.judge.reset()
        if by_caller:
            count("Interruptions")
            logger.info("the caller interrupted the agent", extra={"turn": turn.index})
        self._finish_turn(turn, interrupted=True)

    def _arm_idle(self, seconds: float) -> None:
        self._idle_at = self.clock.now_ms + int(seconds * 1000)
        self._update_timer()

    def _update_timer(self) -> None:
        self._timer_at = min(self._idle_at, self._max_at, self.judge.deadline_ms)

    def _on_timers(self, now: int) -> None:
        if now >= self._max_at:
            self._max_at = NEVER
            logger.info("the call reached its maximum duration")
            self._begin_ending(CallEnd.MAX_DURATION, "max_duration")
        if now >= self.judge.deadline_ms:
            self._barge_in(self.judge.poll(self.detector.text, now), now)
        if now >= self._idle_at:
            self._on_idle(now)
        self._update_timer()

    def _on_idle(self, now: int) -> None:
        agent = self._agent
        self._idle_at = NEVER
        busy = self._turn is not None or self._spec is not None or self._closing
        if busy or self.segmenter.speaking or self.detector.pending:
            # The caller is talking or a turn is under way: not idle; look again later.
            if not self._closing:
                self._arm_idle(agent.conversation.idle_reprompt_s)
            return
        if self._idle_stage == 0:
            self._idle_stage = 1
            logger.info("the caller is silent: reprompting")
            self._start_phrase_turn("reprompt", agent.conversation.idle_reprompt)
        else:
            logger.info("the caller stayed silent: ending the call")
            self._begin_ending(CallEnd.IDLE, "idle")

    def _begin_ending(self, end: CallEnd, reason: str) -> None:
        """Say goodbye, record why the conversation ended, close once the goodbye has played."""
        if self._closing:
            return
        agent = self._agent
        self._drop_spec()
        if self._turn is not None:
            self._interrupt(self.clock.now_ms, by_caller=False)
        self._closing = True
        self._start_phrase_turn("goodbye", agent.conversation.goodbye, ending=end, conversation_end=reason)

    def first_audio(self, turn_index: int) -> None:
        turn = self._turn
        if turn is not None and turn.index == turn_index and turn.report.first_audio_sent is None:
            turn.report.first_audio_sent = self.wall()

    def sync_echo_floor(self) -> None:
        audible = self._playback.audible
        if audible != self._echo_floor:
            self._echo_floor = audible
            self.segmenter.set_echo_floor(audible)

    def _playback_moved(self) -> None:
        """Wake whoever waits for playout, and keep the VAD's echo guard in step with it."""
        self._playback_changed.set()
        self._playback_changed = asyncio.Event()
        self.sync_echo_floor()

    @property
    def now_ms(self) -> int:
        return self.clock.now_ms

    @property
    def phrases(self) -> PhraseCache:
        return self._phrases

    async def sleep_until(self, at_ms: int) -> None:
        await self.clock.sleep_until(at_ms)

    async def wait_drained(self) -> None:
        """Until the playback has played out; gives up (logged) when marks stop coming back."""
        playback = self._playback
        while not playback.drained:
            changed = self._playback_changed
            if playback.held:
                await changed.wait()
                continue
            now = self.clock.now_ms
            deadline = now + playback.unplayed_ms(now) + _DRAIN_MARGIN_MS
            timer: asyncio.Future[Any] = self.clock.sleep_until(deadline)
            waiting: asyncio.Future[Any] = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait([timer, waiting], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
                timer.cancel()
            if timer.done() and not timer.cancelled() and not changed.is_set() and not playback.drained:
                logger.warning("the agent's audio was not confirmed played: going on without it")
                return

    def next_filler(self) -> tuple[str, bytes] | None:
        agent, phrases = self._agent, self._phrases
        fillers = agent.conversation.fillers
        text = fillers[next(self._fillers) % len(fillers)]
        audio = phrases.cached(text)
        return None if audio is None else (text, audio)

    def call_ending(self) -> None:
        self._closing = True
        self._drop_spec()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._spawner(coroutine, f"{name}:{self.call_sid}")

    def _at(self, stream_ms: int) -> datetime:
        return self.epoch + timedelta(milliseconds=stream_ms)
