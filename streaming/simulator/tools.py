"""ScriptedToolActions: the tool-actions client for tests and the demo, with no Lambda behind it.

Schemas are the real ones (switchboard.tool_actions.tool_schemas), so the LLM sees what production
sends; results are scripted per tool (in order, the last one repeating) or a plain success; every
invocation is recorded for the test to inspect. No policy is checked here: that is the tool Lambda's job,
tested on its own.
"""

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from switchboard.agent import AgentConfig
from switchboard.tool import ToolName, ToolOutcome, ToolResult
from switchboard.tool_actions import tool_schemas

DEFAULT_MESSAGES: Final = {
    ToolName.BOOK_APPOINTMENT: "The appointment is booked.",
    ToolName.SEND_SMS: "The text message was sent.",
    ToolName.TRANSFER_CALL: "The call is being transferred.",
    ToolName.END_CALL: "The call will end after your goodbye.",
}


@dataclass(frozen=True, slots=True)
class ToolInvocationRecord:
    call_sid: str
    tool: str
    arguments: dict[str, Any]


class ScriptedToolActions:
    """streaming.tools.ToolActions with scripted results. `delay_s` stands in for the Lambda's round trip."""

    def __init__(
        self, results: Mapping[ToolName, ToolResult | Sequence[ToolResult]] | None = None, *, delay_s: float = 0.0
    ) -> None:
        self._results: dict[ToolName, list[ToolResult]] = {
            tool: [result] if isinstance(result, ToolResult) else list(result)
            for tool, result in (results or {}).items()
        }
        self._delay_s = delay_s
        self._ids = itertools.count(1)
        self.invocations: list[ToolInvocationRecord] = []

    def schemas(self, agent: AgentConfig) -> list[dict[str, Any]]:
        return tool_schemas(agent)

    def of(self, tool: ToolName) -> list[ToolInvocationRecord]:
        return [record for record in self.invocations if record.tool == tool.value]

    async def invoke(self, call_sid: str, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
        self.invocations.append(ToolInvocationRecord(call_sid, tool, dict(arguments)))
        name = ToolName(tool)  # an unknown name is the engine's bug, not an outcome
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        scripted = self._results.get(name)
        if scripted:
            return scripted.pop(0) if len(scripted) > 1 else scripted[0]
        return ToolResult(
            tool=name,
            outcome=ToolOutcome.SUCCEEDED,
            message=DEFAULT_MESSAGES[name],
            invocation_id=f"sim-{next(self._ids)}",
        )
