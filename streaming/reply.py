"""One assistant reply: the LLM streamed with tools → clauses and sentences → TTS → the playback ledger.

Everything streams. Text deltas go through the SentenceAggregator; each chunk is synthesized as soon as
it is complete, and its audio is appended to the call's Playback piece by piece while the LLM is still
writing. Chunks are spoken in order; the next one's synthesis starts once the current one is producing
audio, so sentence boundaries cost no TTS first-byte wait.

A reply may run before the end of the caller's turn is certain (speculation): the Playback holds its
audio until the engine `release()`s it, and no tool runs before that, so a reply dropped unheard has had
no side effect. Cancelling the task stops the LLM and TTS (their iterators are closed); what had been
said stays readable in `rounds`, from which the engine builds the history cut to what was heard.

A provider failure ends the reply with a short cached apology (APOLOGY), never an exception: the call
goes on listening.
"""

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from streaming.audio.codec import pcm16_to_ulaw
from streaming.conversation import llm_window
from streaming.knowledge import SEARCH_TOOL, KnowledgeBase, context_message, search_result
from streaming.phrases import APOLOGY, PhraseCache
from streaming.playback import Clip, ClipKind, Playback
from streaming.providers.base import LanguageModel, TextDelta, TextToSpeech, ToolCall, last_user_text
from streaming.sentences import SentenceAggregator
from streaming.telemetry import TurnReport, count_error
from streaming.tools import ToolActions
from switchboard.agent import AgentConfig
from switchboard.observability import logger
from switchboard.state import ChatMessage
from switchboard.tool import ToolName, ToolOutcome, ToolResult

# A model that keeps calling tools is stopped after this many rounds.
MAX_ROUNDS: Final = 4
_UNAVAILABLE: Final = "The action is not available right now."
_INTERRUPTED_RESULT: Final = json.dumps(
    {
        "outcome": "unknown",
        "message": "The caller interrupted before the result came back. If it still matters, call the tool again "
        "with the same arguments: it will not be done twice.",
    }
)


class ReplyEnd(StrEnum):
    DONE = "done"
    END_CALL = "end_call"  # end_call succeeded: the call closes once this reply has played
    TRANSFERRED = "transferred"  # transfer_call succeeded: Twilio ends the stream
    FAILED = "failed"  # a provider failed; the apology was said


class ReplyHost(Protocol):
    """What a reply needs from the call engine."""

    @property
    def playback(self) -> Playback:
        """The call's outbound audio, which the reply appends its clips to."""
        ...

    @property
    def phrases(self) -> PhraseCache: ...

    @property
    def now_ms(self) -> int:
        """The call's audio-stream time."""
        ...

    def wall(self) -> float:
        """The engine clock, for the turn report."""
        ...

    async def sleep_until(self, at_ms: int) -> None:
        """Until the audio stream reaches `at_ms`."""
        ...

    async def wait_drained(self) -> None:
        """Until everything appended to the playback has played (bounded by the engine)."""
        ...

    def next_filler(self) -> tuple[str, bytes] | None:
        """The next cached filler phrase and its audio, if one is cached."""
        ...

    def call_ending(self) -> None:
        """end_call or transfer_call succeeded: the caller can no longer interrupt."""
        ...


@dataclass(eq=False, slots=True)
class ReplyRound:
    """One LLM request of the reply: what it wrote, the clips spoken from it, the tools it called."""

    text: str = ""
    clips: list[Clip] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    results: dict[str, ChatMessage] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Say:
    text: str
    round: ReplyRound
    audio: bytes | None = None  # a cached phrase; None: synthesize `text`


class _Synthesis:
    """One chunk's TTS running ahead in its own task, its μ-law audio queued as it arrives."""

    def __init__(
        self, pieces: AsyncIterator[bytes], on_first_byte: Callable[[], None] | None, *, encoded: bool = False
    ) -> None:
        """`pieces` are PCM16 from the TTS, or with `encoded` μ-law already (a cached phrase)."""
        self._source = pieces
        self._on_first_byte = on_first_byte
        self._encoded = encoded
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

    async def run(self) -> None:
        carry = b""
        try:
            async for pcm in self._source:
                if self._on_first_byte is not None:
                    self._on_first_byte()
                    self._on_first_byte = None
                if self._encoded:
                    self._queue.put_nowait(pcm)
                    continue
                # TTS streams may split a sample across chunks: an odd byte waits for its partner.
                data = carry + pcm if carry else pcm
                even = len(data) - len(data) % 2
                carry = data[even:]
                if even:
                    self._queue.put_nowait(pcm16_to_ulaw(data[:even]))
            self._queue.put_nowait(None)
        except Exception as error:  # handed to the speaker, which decides what a failure means
            self._queue.put_nowait(error)
        finally:
            await _aclose(self._source)

    async def pieces(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


async def _aclose(iterator: object) -> None:
    closing = getattr(iterator, "aclose", None)
    if closing is not None:
        await closing()


def _tool_message(call: ToolCall, result: ToolResult | None, content: str | None = None) -> ChatMessage:
    if content is None:
        assert result is not None
        content = json.dumps({"outcome": result.outcome.value, "message": result.message, "data": result.data})
    return ChatMessage(role="tool", tool_call_id=call.call_id, name=call.name, content=content)


def _assistant(said: str, calls: Sequence[ToolCall]) -> ChatMessage:
    """The assistant message that asked for tools, as chat-completion APIs expect it back."""
    tool_calls = [
        {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in calls
    ]
    return ChatMessage(role="assistant", content=said or None, tool_calls=tool_calls)


def _refusal(message: str) -> str:
    return json.dumps({"outcome": "refused", "message": message})


class Reply:
    """One assistant turn's reply. `run()` returns how it ended once all its audio has played."""

    def __init__(
        self,
        *,
        host: ReplyHost,
        call_sid: str,
        turn: int,
        agent: AgentConfig,
        llm: LanguageModel,
        tts: TextToSpeech,
        tools: ToolActions,
        messages: Sequence[ChatMessage],
        report: TurnReport,
        released_at_ms: int | None,
        schemas: Sequence[Mapping[str, Any]] | None = None,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        """`released_at_ms`: the end of turn when the reply is not speculative; None holds it back.
        `schemas`: the agent's tool schemas when the caller already has them (they are the same for every
        reply of a call, and building them costs more than the rest of starting a reply); else asked for.
        `knowledge`: the agent's knowledge base, used as the agent's `knowledge_search` says."""
        self._host = host
        self._call_sid = call_sid
        self.turn = turn
        self._agent = agent
        self._llm = llm
        self._tts = tts
        self._tools = tools
        self._schemas = tools.schemas(agent) if schemas is None else schemas
        self._tool_names = frozenset(schema.get("function", {}).get("name") for schema in self._schemas)
        self._messages = list(messages)
        self._knowledge = knowledge
        self.report = report
        self.rounds: list[ReplyRound] = []
        self.failed: str | None = None  # the provider that failed: "llm" or "tts"
        self._released = asyncio.Event()
        self._end_of_turn_ms = 0
        if released_at_ms is not None:
            self.release(released_at_ms)
        self._clips = 0
        self._spoke = False
        self._audio_started = False
        self._apologized = False
        self._ahead: deque[tuple[_Say, _Synthesis]] = deque()
        self._input_done = False
        self._group: asyncio.TaskGroup | None = None

    # -- the engine's handles ---------------------------------------------------------------------------

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self, end_of_turn_ms: int) -> None:
        """The caller's turn has ended: the reply's audio may play, its tools may run."""
        if not self._released.is_set():
            self._end_of_turn_ms = end_of_turn_ms
            self._released.set()

    @property
    def text(self) -> str:
        """Everything the agent meant to say in this reply so far."""
        return " ".join(part for part in (round_.text.strip() for round_ in self.rounds) if part)

    @property
    def clips(self) -> list[Clip]:
        return [clip for round_ in self.rounds for clip in round_.clips]

    def history(self, heard: Callable[[Clip], str] | None = None) -> list[ChatMessage]:
        """The reply's messages for the LLM's history: what was said, or with `heard`, what was heard of it."""
        messages: list[ChatMessage] = []
        for round_ in self.rounds:
            said = " ".join(part for clip in round_.clips if (part := heard(clip) if heard else clip.text))
            if round_.tool_calls:
                messages.append(_assistant(said, round_.tool_calls))
                for call in round_.tool_calls:
                    result = round_.results.get(call.call_id)
                    messages.append(result or _tool_message(call, None, _INTERRUPTED_RESULT))
            elif said:
                messages.append(ChatMessage(role="assistant", content=said))
        return messages

    # -- running ----------------------------------------------------------------------------------------

    async def run(self) -> ReplyEnd:
        queue: asyncio.Queue[_Say | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as group:
            self._group = group
            speaker = group.create_task(self._speak(queue), name=f"reply-speaker:{self.turn}")
            filler = group.create_task(self._filler(), name=f"reply-filler:{self.turn}")
            end = await self._think(queue)
            queue.put_nowait(None)
            await speaker
            filler.cancel()
        if self.failed is not None:
            end = ReplyEnd.FAILED
        await self._host.wait_drained()
        return end

    async def _think(self, queue: asyncio.Queue[_Say | None]) -> ReplyEnd:
        report = self.report
        messages = list(self._messages)
        aggregator = SentenceAggregator()
        passages = self._passages()
        for _ in range(MAX_ROUNDS):
            round_ = ReplyRound()
            self.rounds.append(round_)
            calls: list[ToolCall] = []
            if report.llm_start is None:
                report.llm_start = self._host.wall()
            window = llm_window(messages)
            if passages is not None:
                # After the system prompt, before the conversation: context, not something anyone said.
                window.insert(1 if window and window[0].role == "system" else 0, passages)
            stream = self._llm.reply(window, self._schemas)
            try:
                async for event in stream:
                    if report.llm_first_token is None:
                        report.llm_first_token = self._host.wall()
                    if isinstance(event, TextDelta):
                        round_.text += event.text
                        for chunk in aggregator.feed(event.text):
                            self._say(queue, chunk, round_)
                    else:
                        calls.append(event)
                    if self.failed is not None:
                        break
            except Exception:
                logger.exception("the language model failed")
                count_error("llm")
                report.errors.append("llm")
                self.failed = "llm"
            finally:
                await _aclose(stream)
            if self.failed is not None:
                break
            if (rest := aggregator.flush()) is not None:
                self._say(queue, rest, round_)
            if not calls:
                return ReplyEnd.DONE
            ending = await self._use_tools(round_, calls, queue)
            if ending is not None:
                return ending
            messages.append(_assistant(round_.text.strip(), round_.tool_calls))
            messages.extend(round_.results[call.call_id] for call in round_.tool_calls)
        if self.failed == "llm":
            self._apologize(queue, self.rounds[-1])
            return ReplyEnd.FAILED
        return ReplyEnd.DONE

    def _passages(self) -> ChatMessage | None:
        """The knowledge-base passages for the caller's turn, when the agent gets them every turn."""
        if self._knowledge is None or self._agent.knowledge_search != "every_turn":
            return None
        said = last_user_text(self._messages)
        found = self._knowledge.search(said) if said else []
        return ChatMessage(role="system", content=context_message(found)) if found else None

    def _say(
        self, queue: asyncio.Queue[_Say | None], text: str, round_: ReplyRound, audio: bytes | None = None
    ) -> None:
        if self.report.first_chunk is None:
            self.report.first_chunk = self._host.wall()
        self._spoke = True
        queue.put_nowait(_Say(text, round_, audio))

    def _apologize(self, queue: asyncio.Queue[_Say | None] | None, round_: ReplyRound) -> _Say | None:
        """Queue (or return) the cached apology, once; nothing when it is not cached."""
        if self._apologized:
            return None
        self._apologized = True
        audio = self._host.phrases.cached(APOLOGY)
        if audio is None:
            return None
        round_.text = f"{round_.text.strip()} {APOLOGY}".strip()
        say = _Say(APOLOGY, round_, audio)
        if queue is not None:
            queue.put_nowait(say)
        return say

    # -- tools ------------------------------------------------------------------------------------------

    async def _use_tools(
        self, round_: ReplyRound, calls: list[ToolCall], queue: asyncio.Queue[_Say | None]
    ) -> ReplyEnd | None:
        round_.tool_calls = calls
        # A knowledge search has no side effect: it may run while the reply is still speculative.
        for call in calls:
            if call.name == SEARCH_TOOL and self._knowledge is not None:
                round_.results[call.call_id] = self._search(call)
        calls = [call for call in calls if call.call_id not in round_.results]
        # No side effect for a reply the caller may never hear: wait until the turn is really over.
        if calls:
            await self._released.wait()
        # Hanging up or transferring comes after every other action of the round.
        ordered = sorted(calls, key=lambda call: call.name in (ToolName.END_CALL, ToolName.TRANSFER_CALL))
        ending: ReplyEnd | None = None
        for call in ordered:
            arguments = self._arguments(call)
            if isinstance(arguments, str):
                round_.results[call.call_id] = _tool_message(call, None, arguments)
                continue
            if call.name == ToolName.TRANSFER_CALL:
                # The caller hears what the model said first ("Let me put you through"), then the line moves.
                await queue.join()
                await self._host.wait_drained()
            result = await self._invoke(call.name, arguments)
            round_.results[call.call_id] = _tool_message(call, result)
            if result.outcome is not ToolOutcome.SUCCEEDED:
                continue
            if call.name == ToolName.END_CALL:
                self._host.call_ending()
                if not self._spoke:
                    await self._say_goodbye(queue, round_)
                ending = ReplyEnd.END_CALL
            elif call.name == ToolName.TRANSFER_CALL:
                self._host.call_ending()
                ending = ReplyEnd.TRANSFERRED
        return ending

    def _search(self, call: ToolCall) -> ChatMessage:
        assert self._knowledge is not None
        arguments = self._arguments(call)
        if isinstance(arguments, str):
            return _tool_message(call, None, arguments)
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            return _tool_message(call, None, _refusal("`query` must be a non-empty string."))
        return _tool_message(call, None, search_result(self._knowledge.search(query)))

    def _arguments(self, call: ToolCall) -> dict[str, Any] | str:
        """The call's arguments, or the refusal the model is told instead (nothing is invoked then)."""
        if call.name not in self._tool_names:
            return _refusal(f"There is no tool named {call.name!r} for this call.")
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            return _refusal("The arguments were not a valid JSON object, so nothing was done. Try again.")
        return arguments

    async def _invoke(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        try:
            return await self._tools.invoke(self._call_sid, name, arguments)
        except Exception:
            # The client promises results, not exceptions; a bug there must still not end the call.
            logger.exception("the tool client raised", extra={"tool": name})
            count_error("tool")
            return ToolResult(tool=ToolName(name), outcome=ToolOutcome.FAILED, message=_UNAVAILABLE)

    async def _say_goodbye(self, queue: asyncio.Queue[_Say | None], round_: ReplyRound) -> None:
        goodbye = self._agent.conversation.goodbye
        try:
            audio = await self._host.phrases.get(goodbye)
        except Exception:
            logger.exception("could not synthesize the goodbye")
            count_error("tts")
            return
        round_.text = f"{round_.text.strip()} {goodbye}".strip()
        self._say(queue, goodbye, round_, audio)

    # -- speaking ---------------------------------------------------------------------------------------

    async def _speak(self, queue: asyncio.Queue[_Say | None]) -> None:
        while True:
            if self._ahead:
                say, synthesis = self._ahead.popleft()
            elif self._input_done:
                return
            else:
                item = await queue.get()
                if item is None:
                    queue.task_done()
                    return
                say, synthesis = item, self._synthesis(item)
            try:
                await self._play(say, synthesis, queue)
            finally:
                queue.task_done()

    def _synthesis(self, say: _Say) -> _Synthesis:
        if say.audio is not None:
            synthesis = _Synthesis(_cached(say.audio), None, encoded=True)
        else:
            first = self.report.tts_request is None
            if first:
                self.report.tts_request = self._host.wall()
            stream = self._tts.synthesize(say.text, voice=self._agent.voice, language=self._agent.language)
            synthesis = _Synthesis(stream, self._stamp_first_byte if first else None)
        assert self._group is not None
        self._group.create_task(synthesis.run(), name=f"reply-tts:{self.turn}")
        return synthesis

    def _stamp_first_byte(self) -> None:
        self.report.tts_first_byte = self._host.wall()

    def _prefetch(self, queue: asyncio.Queue[_Say | None]) -> None:
        """Start the next chunk's synthesis while this one's audio is still coming (one ahead at most)."""
        if self._ahead or self._input_done or queue.empty():
            return
        item = queue.get_nowait()
        if item is None:
            self._input_done = True
            queue.task_done()
            return
        if self.failed == "tts" and item.audio is None:
            queue.task_done()
            return
        self._ahead.append((item, self._synthesis(item)))

    async def _play(self, say: _Say, synthesis: _Synthesis, queue: asyncio.Queue[_Say | None]) -> None:
        playback = self._host.playback
        if self.failed == "tts" and say.audio is None:
            return  # the TTS is down: only cached phrases can still be said
        clip: Clip | None = None
        try:
            async for piece in synthesis.pieces():
                if clip is None:
                    clip = self._open(say)
                playback.append(clip, piece, self._host.now_ms)
                self._prefetch(queue)
        except Exception:
            logger.exception("text-to-speech failed")
            count_error("tts")
            self.report.errors.append("tts")
            self.failed = "tts"
        finally:
            # A chunk that produced no audio was not said: it gets no clip, so no place in the history.
            if clip is not None:
                playback.close(clip, self._host.now_ms)
        if self.failed == "tts" and not self._apologized:
            apology = self._apologize(None, say.round)
            if apology is not None:
                await self._play(apology, self._synthesis(apology), queue)

    def _open(self, say: _Say) -> Clip:
        first = not self._audio_started
        self._audio_started = True
        clip = self._host.playback.open_clip(
            turn=self.turn, index=self._clips, kind=ClipKind.SPEECH, text=say.text, first=first
        )
        self._clips += 1
        say.round.clips.append(clip)
        return clip

    async def _filler(self) -> None:
        await self._released.wait()
        await self._host.sleep_until(self._end_of_turn_ms + self._agent.conversation.filler_after_ms)
        if self._audio_started or self.failed is not None:
            return
        filler = self._host.next_filler()
        if filler is None:
            return
        text, audio = filler
        playback = self._host.playback
        clip = playback.open_clip(turn=self.turn, index=-1, kind=ClipKind.FILLER, text=text)
        playback.append(clip, audio, self._host.now_ms)
        playback.close(clip, self._host.now_ms)
        self.report.filler_played = True


async def _cached(audio: bytes) -> AsyncIterator[bytes]:
    """A cached phrase's μ-law audio as one piece (its `_Synthesis` must not encode it again)."""
    yield audio
