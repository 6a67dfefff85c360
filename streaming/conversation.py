"""The conversation as this task holds it: the LLM's history and the turn counter, and writing both out.

Every finished turn changes the context (`Conversation.commit_*`), which goes to Redis through the
`ContextSaver` (latest wins: a slow save coalesces the turns behind it) and, once saved, to DynamoDB
through the `TurnWriter` (one task per call, in order, retried), so neither ever stalls the audio.

Turns reach DynamoDB only after the context that counts them is saved. A task that picks the call up
after a drop loads that context and numbers its turns from its `turn_count`: no index is used twice (a
replayed write of the same turn is a no-op in CallRecords), and none is skipped.
"""

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from redis.exceptions import RedisError

from streaming.blocking import run_blocking
from streaming.telemetry import count_error
from switchboard.agent import AgentConfig
from switchboard.call import Call
from switchboard.events import CallEvent, CallEvents, CallEventType
from switchboard.observability import logger
from switchboard.records import CallRecords, ConflictingRecord
from switchboard.state import (
    CallContext,
    CallStateError,
    CallStateStore,
    ChatMessage,
    Lease,
    LeaseLost,
    VersionConflict,
)
from switchboard.turn import Role, Turn

# What the LLM sees of a long call: the system message and the most recent messages.
LLM_WINDOW_MESSAGES: Final = 48
_SAVE_ATTEMPTS: Final = 3
_WRITE_ATTEMPTS: Final = 4
_RETRY_BASE_S: Final = 0.2


def system_message(agent: AgentConfig, facts: Mapping[str, str]) -> ChatMessage:
    """The agent's prompt and the call's facts, as the first message of the history.

    The knowledge base is not pasted here: the passages a turn needs are retrieved for it (knowledge.py)."""
    parts = [agent.system_prompt.strip()]
    if facts:
        parts.append("Call facts:\n" + "\n".join(f"- {key}: {value}" for key, value in sorted(facts.items())))
    return ChatMessage(role="system", content="\n\n".join(parts))


def new_context(call: Call, agent: AgentConfig, started_at: datetime) -> CallContext:
    """The live state of a call's first stream, from its durable record."""
    return CallContext(
        call_sid=call.call_sid,
        direction=call.direction,
        from_number=call.from_number,
        to_number=call.to_number,
        agent_id=call.agent_id,
        facts=dict(call.facts),
        messages=[system_message(agent, call.facts)],
        started_at=started_at,
    )


def llm_window(messages: Sequence[ChatMessage], limit: int = LLM_WINDOW_MESSAGES) -> list[ChatMessage]:
    """The system message and the last `limit` others, never starting on an orphaned tool result."""
    if len(messages) <= limit + 1:
        return list(messages)
    head = [message for message in messages[:1] if message.role == "system"]
    tail = list(messages[-limit:])
    while tail and tail[0].role == "tool":
        tail.pop(0)
    return head + tail


class TurnWriter:
    """Writes finished turns to DynamoDB in order, then publishes TurnCompleted; retries, never raises."""

    def __init__(self, records: CallRecords, events: CallEvents | None, *, call_sid: str, agent_id: str) -> None:
        self._records = records
        self._events = events
        self._call_sid = call_sid
        self._agent_id = agent_id
        self._queue: asyncio.Queue[Turn] = asyncio.Queue()
        self.written = 0

    def submit(self, turns: Sequence[Turn]) -> None:
        for turn in turns:
            self._queue.put_nowait(turn)

    async def flush(self) -> None:
        await self._queue.join()

    async def run(self) -> None:
        while True:
            turn = await self._queue.get()
            try:
                if await self._write(turn):
                    await self._publish(turn)
            finally:
                self._queue.task_done()

    async def _write(self, turn: Turn) -> bool:
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                await run_blocking(self._records.put_turn, turn)
                self.written += 1
                return True
            except ConflictingRecord:
                # Another turn holds this index: a resume numbered from a context older than DynamoDB.
                logger.error("a different turn is already recorded at this index", extra={"turn": turn.index})
                count_error("records")
                return False
            except Exception:
                if attempt + 1 == _WRITE_ATTEMPTS:
                    logger.exception("could not record a turn", extra={"turn": turn.index})
                    count_error("records")
                    return False
                await asyncio.sleep(_RETRY_BASE_S * 2**attempt)
        return False

    async def _publish(self, turn: Turn) -> None:
        if self._events is None:
            return
        event = CallEvent(
            type=CallEventType.TURN_COMPLETED,
            call_sid=self._call_sid,
            agent_id=self._agent_id,
            facts={"turn": turn.index, "role": turn.role.value, "interrupted": turn.interrupted},
        )
        try:
            await run_blocking(self._events.emit, event)
        except Exception:
            logger.exception("could not publish TurnCompleted", extra={"turn": turn.index})
            count_error("events")


class ContextSaver:
    """Saves the newest context with the call's lease (latest wins), then hands its turns to the writer.

    `lost` is set when a save finds the lease gone: another task drives the call now.
    """

    def __init__(self, store: CallStateStore, lease: Lease, writer: TurnWriter, *, version: int) -> None:
        self._store = store
        self._lease = lease
        self._writer = writer
        self._version = version
        self._latest: CallContext | None = None
        self._turns: list[Turn] = []
        self._wake = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self.lost = asyncio.Event()
        self.saves = 0

    def submit(self, context: CallContext, turns: Sequence[Turn]) -> None:
        self._latest = context
        self._turns.extend(turns)
        self._caught_up.clear()
        self._wake.set()

    async def flush(self) -> None:
        await self._caught_up.wait()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            context, turns = self._latest, self._turns
            self._turns = []
            if context is not None:
                outcome = await self._save(context)
                if outcome is None:
                    self.lost.set()
                    self._caught_up.set()
                    return
                # Written even when the save failed for another reason: DynamoDB is the durable record.
                self._writer.submit(turns)
            if not self._wake.is_set():
                self._caught_up.set()

    async def _save(self, context: CallContext) -> bool | None:
        """True when saved, False when it could not be (logged), None when the lease is lost."""
        for attempt in range(_SAVE_ATTEMPTS):
            try:
                try:
                    saved = await self._store.save(context.model_copy(update={"version": self._version}), self._lease)
                except VersionConflict:
                    # Someone else wrote the context (not the turn loop): keep theirs, put our history in.
                    saved = await self._store.update(
                        context.call_sid,
                        self._lease,
                        lambda current: current.model_copy(
                            update={
                                "messages": context.messages,
                                "turn_count": context.turn_count,
                                "greeted": context.greeted,
                            }
                        ),
                    )
                self._version = saved.version
                self.saves += 1
                return True
            except LeaseLost:
                logger.warning("the call's lease was lost while saving its context")
                return None
            except (CallStateError, RedisError, OSError):
                if attempt + 1 == _SAVE_ATTEMPTS:
                    logger.exception("could not save the call context")
                    count_error("state")
                    return False
                await asyncio.sleep(_RETRY_BASE_S * 2**attempt)
        return False


class Conversation:
    """The history and turn counter of the call; every commit is saved and recorded in the background."""

    def __init__(self, context: CallContext, saver: ContextSaver) -> None:
        self._context = context
        self._saver = saver

    @property
    def context(self) -> CallContext:
        return self._context

    @property
    def next_index(self) -> int:
        return self._context.turn_count

    @property
    def messages(self) -> list[ChatMessage]:
        return self._context.messages

    def commit_user(self, text: str, *, started_at: datetime, ended_at: datetime) -> Turn:
        turn = Turn(
            call_sid=self._context.call_sid,
            index=self.next_index,
            role=Role.USER,
            text=text,
            started_at=started_at,
            ended_at=max(started_at, ended_at),
        )
        self._commit(turn, [ChatMessage(role="user", content=text)])
        return turn

    def commit_agent(
        self,
        text: str,
        *,
        messages: Sequence[ChatMessage],
        interrupted: bool,
        heard: str | None,
        started_at: datetime,
        ended_at: datetime,
        greeting: bool = False,
    ) -> Turn:
        turn = Turn(
            call_sid=self._context.call_sid,
            index=self.next_index,
            role=Role.ASSISTANT,
            text=text,
            started_at=started_at,
            ended_at=max(started_at, ended_at),
            interrupted=interrupted,
            heard_text=heard if interrupted else None,
        )
        self._commit(turn, messages, greeted=greeting or self._context.greeted)
        return turn

    def mark_greeted(self) -> None:
        """The greeting was attempted but nothing could be said: do not try again on a resume."""
        if not self._context.greeted:
            self._context = self._context.model_copy(update={"greeted": True})
            self._saver.submit(self._context, [])

    def _commit(self, turn: Turn, messages: Sequence[ChatMessage], *, greeted: bool | None = None) -> None:
        update: dict[str, object] = {
            "messages": [*self._context.messages, *messages],
            "turn_count": turn.index + 1,
        }
        if greeted is not None:
            update["greeted"] = greeted
        self._context = self._context.model_copy(update=update)
        self._saver.submit(self._context, [turn])
