"""The tool-actions client: how the engine asks for a side effect. The policy lives behind it.

The production implementation signs POST /tools/{name} with SigV4 (the task role) and sends a
switchboard.tool.ToolRequest; the tool Lambda checks every policy and answers a ToolResult. The engine
treats every answer, even a transport failure, as a ToolResult it can tell the LLM about: a tool
never crashes a call.
"""

from collections.abc import Mapping
from typing import Any, Protocol

from switchboard.agent import AgentConfig
from switchboard.tool import ToolResult


class ToolActions(Protocol):
    def schemas(self, agent: AgentConfig) -> list[dict[str, Any]]:
        """The agent's enabled tools as OpenAI function-tool definitions, for the LLM."""
        ...

    async def invoke(self, call_sid: str, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Run one tool for one call. Never raises for an outcome: refusals and failures are results."""
        ...
