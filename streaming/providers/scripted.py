"""The scripted language model: deterministic, it follows the agent's flow (`llm.flow`) and calls its tools.

For the demo and the tests when no LLM is configured (no OpenAI key), and for agents whose `llm.provider`
is "scripted". Given the same messages it always gives the same events, at once (no artificial delay):

- To a caller's turn: the first step of the flow with a `when` phrase found, as whole words in order, in the
  caller's latest message (lower-cased, punctuation ignored). DTMF reaches the model as user text from the
  engine ("[keypad] 4 2 1 5"), so "keypad 1" matches a key press of 1. The step's `say` streams as small
  text deltas (simulated.tokens: up to 4 characters, like a BPE tokenizer's), then its tool call, with JSON
  arguments in which `{next:tue}` is the next Tuesday in the booking calendar's time zone.
- After the tool's result (the last message is the tool's): the step's `then` when the tool succeeded;
  when it was refused or failed, an apology and the result's message (what the tool said went wrong, meant
  to be said to the caller: streaming/reply.py writes it as {"outcome", "message", "data"}). A step
  without `then` says nothing more after a success.
- Nothing matches: the agent's `llm.fallback`.

A flow is written for the demo: its tool arguments are made up ("Sam Taylor", next Tuesday at ten). When
it stands in for a missing OpenAI key on a deployment, it answers real callers, so it is built with
`acts=False`: the steps whose tools act for the caller (a booking, an SMS) are left out, and only those
that end the call or hand it to a person remain.
"""

import json
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from streaming.providers.base import LlmEvent, TextDelta, ToolCall, last_user_text
from streaming.providers.simulated import tokens
from switchboard.agent import AgentConfig, FlowStep
from switchboard.observability import logger
from switchboard.state import ChatMessage
from switchboard.tool import ToolName, ToolOutcome

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")
REFUSED_PREFIX: Final = "I'm sorry, I couldn't do that."
# What a flow may still do for a real caller when it only stands in for the LLM: end the call, or hand it to
# a person on the agent's allow-list. Neither acts for the caller with the flow's made-up details.
HANDS_OFF_TOOLS: Final = frozenset({ToolName.END_CALL, ToolName.TRANSFER_CALL})


def words(text: str) -> tuple[str, ...]:
    """The words of `text` as a flow matches them: lower-case, no punctuation ("I'd" stays "i'd")."""
    return tuple(_WORD.findall(text.lower()))


def _contains(said: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    size = len(phrase)
    return any(said[start : start + size] == phrase for start in range(len(said) - size + 1))


def _outcome(content: str | None) -> tuple[str, str]:
    """The outcome and message of a tool message's content; anything unreadable counts as a failure."""
    try:
        result = json.loads(content or "")
    except json.JSONDecodeError:
        return ToolOutcome.FAILED.value, ""
    if not isinstance(result, dict):
        return ToolOutcome.FAILED.value, ""
    message = result.get("message")
    return str(result.get("outcome", ToolOutcome.FAILED.value)), message if isinstance(message, str) else ""


class ScriptedLanguageModel:
    """LanguageModel for one agent, following its `llm.flow`."""

    def __init__(self, agent: AgentConfig, *, acts: bool = True, today: Callable[[], date] | None = None) -> None:
        """`acts`: False leaves out the steps whose tools act for the caller (see the module docstring).
        `today`: the date `{next:…}` counts from; by default today in the agent's booking calendar's time
        zone (a booking script must land in that calendar's future), else in the server's."""
        self._flow = agent.llm.flow
        self._fallback = agent.llm.fallback
        # (index in the flow, its phrases) of the steps this model may take.
        self._phrases = [
            (index, [words(phrase) for phrase in step.when])
            for index, step in enumerate(self._flow)
            if acts or step.tool is None or step.tool.name in HANDS_OFF_TOOLS
        ]
        booking = agent.tools.book_appointment
        zone = ZoneInfo(booking.timezone) if booking is not None else None
        self._today = today or (lambda: datetime.now(zone).date())
        if not self._flow:
            logger.warning("the scripted model has no flow: it can only say its fallback", extra={"agent": agent.id})

    def step_for(self, said: str) -> tuple[int, FlowStep] | None:
        """The step a caller's message selects, with its index; None when nothing matches."""
        heard = words(said)
        for index, phrases in self._phrases:
            if any(_contains(heard, phrase) for phrase in phrases):
                return index, self._flow[index]
        return None

    async def reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]
    ) -> AsyncGenerator[LlmEvent]:
        said = last_user_text(messages)
        chosen = self.step_for(said)
        last = messages[-1] if messages else None
        if last is not None and last.role == "tool":
            for piece in tokens(self._after_tool(last, chosen)):
                yield TextDelta(piece)
            return
        if chosen is None:
            for piece in tokens(self._fallback):
                yield TextDelta(piece)
            return
        index, step = chosen
        for piece in tokens(step.say or ""):
            yield TextDelta(piece)
        if step.tool is not None:
            turn = sum(message.role == "user" for message in messages)
            arguments = json.dumps(step.tool.arguments_on(self._today()))
            yield ToolCall(f"call_{turn}_{index}_{step.tool.name.value}", step.tool.name.value, arguments)

    def _after_tool(self, result: ChatMessage, chosen: tuple[int, FlowStep] | None) -> str:
        outcome, message = _outcome(result.content)
        if outcome != ToolOutcome.SUCCEEDED.value:
            return f"{REFUSED_PREFIX} {message}".strip()
        if chosen is None:
            return ""
        step = chosen[1]
        if step.tool is None or step.tool.name.value != result.name:
            return ""
        return step.then or ""
