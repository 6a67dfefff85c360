"""The call engine: one live conversation per Twilio media stream.

`CallEngine.run(stream, start)` drives a call from the stream's `start` until Twilio stops it, the
socket goes, the conversation ends (end_call, idle, max duration) or another task takes the call over.

Setup: the call's lease (waiting up to its TTL for the task of a dropped stream to let go), then the
context from Redis (a resumed call: no greeting, the history goes on) or a new one from the call record
(the greeting plays at once from the phrase cache). The agent's fixed phrases are warmed meanwhile.

Then one TaskGroup per call, all cancelled together:

- receive: each media frame is decoded once and fed, in one pass, to the STT session and to the VAD
  segmenter; the frame's timestamp is the engine's clock (turn-taking runs on audio time, so it behaves
  the same on a fast simulated clock); the Dialogue (dialogue.py) then checks its turn detector,
  barge-in judge and timers with one int compare each;
- send: drains the Playback's outbox to the socket in order;
- transcripts: STT results into the Dialogue (the session is reopened if it fails);
- lease: stops the call at once if the lease is lost (without saving: another task owns it);
- one task per agent turn, started by the Dialogue: a Reply (LLM → sentences → TTS → audio) or a phrase.

Every finished turn is saved to Redis and recorded in DynamoDB in the background (conversation.py).
When the stream ends, what the agent was saying is committed as far as it was heard, the context is
saved (unless the lease was lost), pending turn records are written, and the lease is released.

Per frame the engine does: decode, STT send, VAD, a few compares; no allocation it can avoid, no
logging, no I/O but the STT's. Everything else happens per turn.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError
from redis.exceptions import RedisError

from streaming.audio.codec import ulaw_to_pcm16
from streaming.audio.vad import SpeechSegmenter, default_vad
from streaming.barge_in import BargeInSettings
from streaming.conversation import ContextSaver, Conversation, TurnWriter, new_context
from streaming.dialogue import CallEnd, CallEnded, Dialogue
from streaming.knowledge import KnowledgeBase
from streaming.phrases import PhraseCache, PhraseStore, fixed_phrases
from streaming.playback import Playback, SendClear, SendMark
from streaming.protocol import Dtmf, Mark, Media, StartInfo, Stop
from streaming.providers.base import CallProviders, Providers, SpeechSession
from streaming.stream import MediaStream, StreamClosed
from streaming.stream_clock import StreamClock
from streaming.telemetry import (
    FrameLag,
    TurnReport,
    count_error,
    flush_metrics,
)
from streaming.tools import ToolActions
from streaming.turn import TurnTiming
from switchboard.agent import AgentConfig, AgentDirectory
from switchboard.call import Call, valid_call_sid
from switchboard.events import CallEvents
from switchboard.observability import call_context, logger
from switchboard.records import CallRecords
from switchboard.state import (
    CallAlreadyExists,
    CallContext,
    CallStateStore,
    LeaseKeeper,
    LeaseUnavailable,
)

DEFAULT_LEASE_TTL_MS: Final = 6_000
_LEASE_RETRY_S: Final = 0.1
_FLUSH_TIMEOUT_S: Final = 5.0
# Reopening a failed STT session: at once the first time (audio meanwhile is not transcribed), then
# backing off while it keeps failing.
_STT_RETRY_S: Final = (0.0, 0.2, 0.5, 1.0, 2.0, 5.0)
_BYTES_PER_MS: Final = 8

__all__ = ["DEFAULT_LEASE_TTL_MS", "CallEnd", "CallEngine", "CallOutcome", "EngineDeps"]


@dataclass(frozen=True, slots=True)
class CallOutcome:
    call_sid: str
    end: CallEnd
    resumed: bool  # the stream continued a conversation an earlier stream started
    turns: int  # turns (caller's and agent's) this stream finished
    next_turn: int  # the index the next turn of the call will have
    frames: int = 0  # inbound media frames processed
    frame_lag_p99_ms: float = 0.0  # inbound frame lag: arrival versus what its timestamp says
    frame_lag_max_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class EngineDeps:
    """What the engine needs; one instance serves every call of the process."""

    agents: AgentDirectory
    providers: Providers
    tools: ToolActions
    store: CallStateStore
    records: CallRecords
    events: CallEvents | None = None
    owner: str
    on_turn: Callable[[TurnReport], None] | None = None
    clock: Callable[[], float] = time.monotonic
    phrase_store: PhraseStore = field(default_factory=PhraseStore)
    # Each agent's indexed knowledge base, by agent id (streaming.knowledge.load_knowledge).
    knowledge: Mapping[str, KnowledgeBase] = field(default_factory=dict)
    timing: TurnTiming = field(default_factory=TurnTiming)
    barge_in: BargeInSettings = field(default_factory=BargeInSettings)
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS


class CallEngine:
    def __init__(self, deps: EngineDeps) -> None:
        self._deps = deps

    async def run(self, stream: MediaStream, start: StartInfo) -> CallOutcome:
        """Drive the call until it ends; returns once everything it held is released."""
        with call_context(start.call_sid):
            try:
                return await _Call(self._deps, stream, start).run()
            finally:
                flush_metrics()


class _Call:
    """One stream of one call: setting it up, its tasks, and tearing it all down."""

    def __init__(self, deps: EngineDeps, stream: MediaStream, start: StartInfo) -> None:
        self.deps = deps
        self.stream = stream
        self.start = start
        self.call_sid = start.call_sid
        self.wall = deps.clock
        self.clock = StreamClock()
        self.playback = Playback(notify=self._outbox_changed, on_first_audio=self._first_audio)
        self.segmenter = SpeechSegmenter(default_vad())
        self.lag = FrameLag()
        self._outbox_ready = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._agent: AgentConfig | None = None
        self._providers: CallProviders | None = None
        self._phrases: PhraseCache | None = None
        self._conversation: Conversation | None = None
        self._dialogue: Dialogue | None = None
        self._stt: SpeechSession | None = None
        self._stt_offset_ms: int | None = None
        self._epoch_set = False
        self._first_index = 0

    async def run(self) -> CallOutcome:
        try:
            valid_call_sid(self.call_sid)
        except ValidationError:
            logger.error("the stream's CallSid is not a CallSid")
            await self.stream.close()
            return CallOutcome(self.call_sid, CallEnd.UNKNOWN_CALL, False, 0, 0)
        async with AsyncExitStack() as stack:
            record = asyncio.create_task(asyncio.to_thread(self.deps.records.get_call, self.call_sid))
            stack.push_async_callback(_cancel, record)
            keeper = await self._take_lease(stack)
            if keeper is None:
                logger.warning("another task holds the call's lease: giving up on this stream")
                await self.stream.close()
                return CallOutcome(self.call_sid, CallEnd.LEASE_UNAVAILABLE, False, 0, 0)
            context, resumed = await self._context(record)
            if context is None:
                await self.stream.close()
                return CallOutcome(self.call_sid, CallEnd.UNKNOWN_CALL, False, 0, 0)
            if not await self._prepare(context, stack):
                await self.stream.close()
                return CallOutcome(self.call_sid, CallEnd.UNKNOWN_CALL, resumed, 0, context.turn_count)
            logger.info(
                "call stream started",
                extra={"resumed": resumed, "turn_count": context.turn_count, "agent_id": context.agent_id},
            )
            end = await self._converse(context, keeper, stack)
            conversation = self._conversation
            assert conversation is not None
            lag = self.lag
            outcome = CallOutcome(
                self.call_sid,
                end,
                resumed,
                turns=conversation.next_index - self._first_index,
                next_turn=conversation.next_index,
                frames=lag.total_frames + lag.frames,
                frame_lag_p99_ms=lag.percentile(0.99, whole_stream=True),
                frame_lag_max_ms=max(lag.total_max_ms, lag.max_ms),
            )
        if end not in (CallEnd.STREAM_STOPPED, CallEnd.STREAM_CLOSED):
            await self.stream.close()
        logger.info("call stream ended", extra={"end": end.value, "turns": outcome.turns})
        return outcome

    async def _take_lease(self, stack: AsyncExitStack) -> LeaseKeeper | None:
        """The call's lease, waiting up to its TTL for a previous stream's task to let it go."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deps.lease_ttl_ms / 1000
        while True:
            keeper = LeaseKeeper(self.deps.store, self.call_sid, self.deps.owner, self.deps.lease_ttl_ms)
            try:
                return await stack.enter_async_context(keeper)
            except LeaseUnavailable:
                pass
            except (RedisError, OSError):
                logger.warning("could not take the call's lease", exc_info=True)
                count_error("state")
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(_LEASE_RETRY_S)

    async def _context(self, record: asyncio.Task[Call | None]) -> tuple[CallContext | None, bool]:
        """The live context: Redis's when the call is resumed, else a new one from the call record."""
        store = self.deps.store
        try:
            context = await store.load(self.call_sid)
        except (RedisError, OSError, ValidationError):
            logger.exception("could not load the call context")
            count_error("state")
            return None, False
        if context is not None:
            return context, context.greeted or context.turn_count > 0
        try:
            call = await record
        except Exception:
            logger.exception("could not read the call record")
            count_error("records")
            return None, False
        if call is None:
            logger.error("the call has no record")
            return None, False
        agent = self.deps.agents.get(call.agent_id)
        if agent is None:
            logger.error("the call's agent is not deployed here", extra={"agent_id": call.agent_id})
            return None, False
        started_at = call.answered_at or datetime.now(UTC)
        try:
            return await store.create(new_context(call, agent, started_at), agent.conversation.max_call_s), False
        except CallAlreadyExists:
            loaded = await store.load(self.call_sid)
            return loaded, loaded is not None and (loaded.greeted or loaded.turn_count > 0)
        except (RedisError, OSError):
            logger.exception("could not create the call context")
            count_error("state")
            return None, False

    async def _prepare(self, context: CallContext, stack: AsyncExitStack) -> bool:
        """The agent, its providers and phrases, and the STT session."""
        agent = self.deps.agents.get(context.agent_id)
        if agent is None:
            logger.error("the call's agent is not deployed here", extra={"agent_id": context.agent_id})
            return False
        try:
            providers = self.deps.providers.for_call(agent, self.start.custom_parameters)
        except Exception:
            logger.exception("no providers for this call")
            return False
        self._agent = agent
        self._providers = providers
        phrases = PhraseCache(providers.tts, voice=agent.voice, language=agent.language, store=self.deps.phrase_store)
        self._phrases = phrases
        stack.push_async_callback(phrases.close)
        warm = asyncio.create_task(phrases.warm(fixed_phrases(agent)))
        stack.push_async_callback(_cancel, warm)
        self._stt = await self._open_stt()
        stack.push_async_callback(self._close_stt)
        return True

    async def _open_stt(self) -> SpeechSession | None:
        assert self._providers is not None
        assert self._agent is not None
        try:
            agent = self._agent
            session = await self._providers.stt.start(language=agent.language, vocabulary=agent.listening.vocabulary)
        except Exception:
            logger.exception("could not start a speech-to-text session")
            count_error("stt")
            return None
        self._stt_offset_ms = None
        return session

    async def _close_stt(self) -> None:
        session, self._stt = self._stt, None
        if session is not None:
            await _close_quietly(session)

    async def _converse(self, context: CallContext, keeper: LeaseKeeper, stack: AsyncExitStack) -> CallEnd:
        agent, providers, phrases = self._agent, self._providers, self._phrases
        assert agent is not None
        assert providers is not None
        assert phrases is not None
        writer = TurnWriter(self.deps.records, self.deps.events, call_sid=self.call_sid, agent_id=context.agent_id)
        saver = ContextSaver(self.deps.store, keeper.lease, writer, version=context.version)
        conversation = Conversation(context, saver)
        self._conversation = conversation
        self._first_index = context.turn_count
        dialogue = Dialogue(
            call_sid=self.call_sid,
            agent=agent,
            providers=providers,
            tools=self.deps.tools,
            records=self.deps.records,
            phrases=phrases,
            conversation=conversation,
            clock=self.clock,
            playback=self.playback,
            segmenter=self.segmenter,
            lag=self.lag,
            wall=self.wall,
            spawn=self._spawn,
            timing=self.deps.timing,
            barge_in=self.deps.barge_in,
            on_turn=self.deps.on_turn,
            knowledge=self.deps.knowledge.get(agent.id),
        )
        self._dialogue = dialogue
        writing = asyncio.create_task(writer.run(), name=f"turn-writer:{self.call_sid}")
        saving = asyncio.create_task(saver.run(), name=f"context-saver:{self.call_sid}")
        stack.push_async_callback(_cancel, writing)
        stack.push_async_callback(_cancel, saving)
        end = CallEnd.FAILED
        cancelled = False
        try:
            end = await self._live(dialogue, keeper, saver)
        except asyncio.CancelledError:
            # The server hands the call over (shutdown): save what we have, then let go.
            cancelled = True
            end = CallEnd.STREAM_CLOSED
        try:
            if end is not CallEnd.LEASE_LOST:
                dialogue.finish_open_turns()
                await _bounded(saver.flush(), "saving the call context")
            await _bounded(writer.flush(), "recording the call's turns")
        finally:
            if cancelled:
                raise asyncio.CancelledError
        return end

    async def _live(self, dialogue: Dialogue, keeper: LeaseKeeper, saver: ContextSaver) -> CallEnd:
        end = CallEnd.FAILED
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._receive(dialogue), name=f"receive:{self.call_sid}")
                group.create_task(self._send(), name=f"send:{self.call_sid}")
                group.create_task(self._transcripts(dialogue), name=f"transcripts:{self.call_sid}")
                group.create_task(self._watch_lease(keeper, saver), name=f"lease:{self.call_sid}")
                dialogue.begin()
        except* CallEnded as ended:
            first = ended.exceptions[0]
            assert isinstance(first, CallEnded)
            end = first.end
        except* Exception:
            logger.exception("the call engine failed")
            count_error("engine")
        finally:
            self._group = None
        return end

    async def _watch_lease(self, keeper: LeaseKeeper, saver: ContextSaver) -> None:
        waits = [asyncio.ensure_future(keeper.lost.wait()), asyncio.ensure_future(saver.lost.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        logger.warning("the call's lease is lost: another task drives the call now")
        raise CallEnded(CallEnd.LEASE_LOST)

    async def _receive(self, dialogue: Dialogue) -> None:
        stream = self.stream
        while True:
            try:
                message = await stream.receive()
            except StreamClosed:
                raise CallEnded(CallEnd.STREAM_CLOSED) from None
            kind = type(message)
            if kind is Media:
                assert isinstance(message, Media)
                media = message.media
                ulaw = media.payload
                size = len(ulaw) - len(ulaw) % _BYTES_PER_MS
                if not size:
                    continue
                pcm = ulaw_to_pcm16(ulaw if size == len(ulaw) else ulaw[:size])
                session = self._stt
                if session is not None:
                    if self._stt_offset_ms is None:
                        self._stt_offset_ms = media.timestamp
                    try:
                        await session.send_audio(pcm)
                    except Exception:
                        self._stt_failed(session)
                self._on_audio(dialogue, pcm, media.timestamp, size // _BYTES_PER_MS)
            elif kind is Mark:
                assert isinstance(message, Mark)
                dialogue.on_mark(message.mark.name)
            elif kind is Dtmf:
                assert isinstance(message, Dtmf)
                dialogue.on_dtmf(message.dtmf.digit)
            elif kind is Stop:
                raise CallEnded(CallEnd.STREAM_STOPPED)

    async def _send(self) -> None:
        stream = self.stream
        outbox = self.playback.outbox
        ready = self._outbox_ready
        try:
            while True:
                await ready.wait()
                ready.clear()
                while outbox:
                    item = outbox.popleft()
                    if isinstance(item, bytes):
                        await stream.send_media(item)
                    elif isinstance(item, SendMark):
                        await stream.send_mark(item.name)
                    elif isinstance(item, SendClear):
                        await stream.send_clear()
        except StreamClosed:
            raise CallEnded(CallEnd.STREAM_CLOSED) from None

    async def _transcripts(self, dialogue: Dialogue) -> None:
        failures = 0
        while True:
            session = self._stt
            if session is None:
                await asyncio.sleep(_STT_RETRY_S[min(max(failures - 1, 0), len(_STT_RETRY_S) - 1)])
                session = self._stt = await self._open_stt()
                if session is None:
                    failures += 1
                    continue
            try:
                async for result in session.transcripts():
                    failures = 0
                    dialogue.on_transcript(result, self._stt_offset_ms or 0)
            except Exception:
                logger.exception("the speech-to-text session failed: reopening it")
                count_error("stt")
                failures += 1
            if self._stt is session:
                self._stt = None
                await _close_quietly(session)

    def _stt_failed(self, session: SpeechSession) -> None:
        """Sending audio failed: stop sending, close it; the transcripts loop opens a new one."""
        logger.warning("could not send audio to speech-to-text", exc_info=True)
        if self._stt is session:
            self._stt = None
            count_error("stt")
            self._spawn(_close_quietly(session), "stt-close")

    # -- ReplyHost --------------------------------------------------------------------------------------

    def _on_audio(self, dialogue: Dialogue, pcm: bytes, timestamp_ms: int, frame_ms: int) -> None:
        """The per-frame path: VAD, then the dialogue's compares. No allocation we can avoid, no I/O."""
        wall = self.wall()
        self.lag.record(wall, timestamp_ms)
        if not self._epoch_set:
            dialogue.epoch = datetime.now(UTC) - timedelta(milliseconds=timestamp_ms)
            self._epoch_set = True
        clock = self.clock
        now = timestamp_ms + frame_ms
        if now < clock.now_ms:
            now = clock.now_ms
        events = self.segmenter.feed(pcm, timestamp_ms)
        clock.now_ms = now
        dialogue.on_frame(events, now, wall)
        clock.advance(now)

    def _outbox_changed(self) -> None:
        self._outbox_ready.set()
        if self._dialogue is not None:
            self._dialogue.sync_echo_floor()

    def _first_audio(self, turn_index: int) -> None:
        if self._dialogue is not None:
            self._dialogue.first_audio(turn_index)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        group = self._group
        if group is None:
            coroutine.close()
            raise RuntimeError("the call's tasks are not running")
        return group.create_task(coroutine, name=name)


async def _cancel(task: "asyncio.Future[Any]") -> None:
    """Cancel a helper task and wait for it; its outcome is retrieved so asyncio does not warn about it."""
    if not task.done():
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


async def _close_quietly(session: SpeechSession) -> None:
    try:
        await session.aclose()
    except Exception:
        logger.warning("closing a speech-to-text session failed", exc_info=True)


async def _bounded(waiting: Awaitable[None], what: str) -> None:
    try:
        async with asyncio.timeout(_FLUSH_TIMEOUT_S):
            await waiting
    except TimeoutError:
        logger.warning("gave up waiting", extra={"for": what})
